//! The MySQL / MariaDB target system and the context its changes receive.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use flamingock_core::{
    CommitWith, ContextMode, Marker, MarkerSettings, SharedAudit, TargetCapabilities, TargetError,
    TargetSystem,
};
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, MySql, MySqlConnection, MySqlPool, Row, Transaction};
use tokio::sync::OnceCell;

use crate::db_error::{boxed, error_number, is_connection_lost, is_undefined_table};
use crate::names::{Names, Table};
use crate::schema::{self, SchemaError};
use crate::script::split_statements;
use crate::space::idempotent;
use crate::store::{MysqlAuditStore, DEFAULT_PREFIX};

/// The savepoint each change's transaction starts with. MySQL and MariaDB
/// commit the open transaction implicitly at every DDL statement (and at
/// `LOCK TABLES`, a nested `START TRANSACTION`...), which also drops its
/// savepoints: releasing it before `COMMIT` tells whether the transaction
/// is still the one the change began.
const GUARD: &str = "flamingock_tx_guard";

/// `ER_SP_DOES_NOT_EXIST`: `SAVEPOINT ... does not exist`.
const NO_SUCH_SAVEPOINT: u16 = 1305;

/// Default [`MysqlTargetBuilder::idle_timeout`]: the default lease.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A MySQL or MariaDB database changes are applied to.
///
/// Built with [`MysqlTarget::builder`] (any database) or
/// [`MysqlAuditStore::shared_target`] (the audit store's own database),
/// then `build().await`:
///
/// * A **shared** target commits each change in **one transaction** with its
///   APPLIED entry and the fence check (shared-transaction strategy).
/// * Any other target runs the separate-transaction strategy, with a marker
///   row in `<database>.<prefix>_marker` written inside the change's
///   transaction; [`marker(false)`](MysqlTargetBuilder::marker) turns it off.
///
/// # DDL commits implicitly
///
/// MySQL and MariaDB commit the open transaction before and after every DDL
/// statement (`CREATE`, `ALTER`, `DROP`, `RENAME`, `TRUNCATE`...). A
/// "transactional" change that runs `CREATE TABLE` and then fails leaves the
/// table behind, and an APPLIED entry written after a DDL statement is not
/// atomic with it. So:
///
/// * **Declare DDL changes `.transactional(false)`, one DDL statement per
///   change.** They run with the non-transactional strategy: STARTED, apply,
///   APPLIED; a failure or a crash in the middle blocks the change for an
///   operator (unless `AlwaysRetry`), so nothing is silently re-run.
/// * Each change's transaction starts with a savepoint, checked before the
///   commit and after a failure. When it is gone, the database committed by
///   itself: the runner does not claim atomicity, records the outcome under
///   the non-transactional rules ([`TargetError::ImplicitlyCommitted`]) and
///   warns, naming the change. A process killed after the implicit commit
///   and before the runner recorded anything leaves no trace: the next run
///   applies the change again, which is why DDL belongs in non-transactional
///   changes. (A deadlock, which InnoDB answers by rolling the whole
///   transaction back, drops the savepoint too; such a failure is also
///   recorded under the non-transactional rules: blocked, or retried with
///   `AlwaysRetry`.)
/// * SQL-file changes (feature `sql-files`) do this by themselves: a file
///   with a DDL statement runs non-transactionally, and `plan` says why.
///
/// A change's session gets `wait_timeout` = the
/// [idle timeout](MysqlTargetBuilder::idle_timeout): a runner that stalls
/// inside a transaction (paused, lost in a long wait) has its connection
/// closed by the server, which rolls the transaction back and frees its row
/// locks for the runner that took over its lease.
///
/// ```no_run
/// # async fn f(pool: sqlx::MySqlPool) -> Result<(), flamingock_core::TargetError> {
/// use flamingock_mysql::MysqlTarget;
/// let target = MysqlTarget::builder("reporting", pool)
///     .database("reporting")
///     .build()
///     .await?;
/// # let _ = target; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct MysqlTarget {
    id: String,
    pool: MySqlPool,
    names: Names,
    shared: Option<SharedAudit<MysqlAuditStore>>,
    marker: bool,
    marker_ready: Arc<OnceCell<()>>,
    /// `SET SESSION wait_timeout = ...`, sent before each transaction.
    session_sql: Option<Arc<str>>,
}

/// Configures a [`MysqlTarget`]; from [`MysqlTarget::builder`] or
/// [`MysqlAuditStore::shared_target`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MysqlTargetBuilder {
    id: String,
    pool: MySqlPool,
    database: Option<String>,
    shared: Option<MysqlAuditStore>,
    markers: MarkerSettings,
    idle: Option<Duration>,
}

impl MysqlTarget {
    /// A builder for a target named `id` on `pool` (separate-transaction
    /// strategy, with a marker table).
    pub fn builder(id: impl Into<String>, pool: MySqlPool) -> MysqlTargetBuilder {
        MysqlTargetBuilder {
            id: id.into(),
            pool,
            database: None,
            shared: None,
            markers: MarkerSettings::default(),
            idle: Some(DEFAULT_IDLE_TIMEOUT),
        }
    }

    pub(crate) fn shared(id: String, store: MysqlAuditStore) -> MysqlTargetBuilder {
        let mut builder = Self::builder(id, store.pool().clone());
        builder.database = Some(store.database().to_owned());
        builder.shared = Some(store);
        builder
    }
}

impl MysqlTargetBuilder {
    /// The database of the marker table, also what [`MysqlContext::database`]
    /// reports to changes (default: the pool's; a shared target's is the
    /// audit store's).
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.database = Some(database.into());
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
    /// `build`).
    pub fn marker(mut self, yes: bool) -> Self {
        self.markers.set_marker(yes);
        self
    }

    /// How long a change's connection may sit idle inside its transaction
    /// before the server closes it and rolls the transaction back (the
    /// session's `wait_timeout`, whole seconds, default 60 s, the default
    /// lease; `None`: the server's setting). Keep it no longer than the lock's
    /// lease, so a stalled runner cannot hold row locks past its lease.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle = timeout;
        self
    }

    /// Checks the settings. Does no I/O.
    ///
    /// # Errors
    /// [`TargetError::Unsupported`] naming what is wrong: an invalid
    /// database or prefix, no database at all, or marker settings on a
    /// shared target.
    pub async fn build(self) -> Result<MysqlTarget, TargetError> {
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
        let Some(database) = self.database.clone().or_else(|| {
            self.pool
                .connect_options()
                .get_database()
                .map(str::to_owned)
        }) else {
            return Err(invalid(
                "no database: name it in the URL (mysql://user@host/DATABASE) or with \
                 MysqlTarget::builder(..).database(..)"
                    .into(),
            ));
        };
        let names = Names::new(&database, &prefix)
            .map_err(|e| invalid(format!("invalid marker table configuration: {e}")))?;
        let session_sql = self.idle.map(|d| {
            Arc::from(format!(
                "SET SESSION wait_timeout = {}",
                d.as_secs().clamp(1, 31_536_000)
            ))
        });
        Ok(MysqlTarget {
            id: self.id,
            pool: self.pool,
            names,
            shared: self.shared.map(SharedAudit::new),
            marker,
            marker_ready: Arc::default(),
            session_sql,
        })
    }
}

impl MysqlTarget {
    /// The pool.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// The target's database.
    pub fn database(&self) -> &str {
        &self.names.database
    }

    fn backend(&self, operation: &'static str, source: sqlx::Error) -> TargetError {
        TargetError::Backend {
            target: self.id.clone(),
            operation,
            source: boxed(source),
        }
    }

    fn unsupported(&self, detail: &str) -> TargetError {
        TargetError::Unsupported {
            target: self.id.clone(),
            detail: detail.to_owned(),
        }
    }

    fn implicitly_committed(&self) -> TargetError {
        TargetError::ImplicitlyCommitted {
            target: self.id.clone(),
            detail: "the transaction's savepoint is gone: a DDL statement (or LOCK TABLES, \
                     START TRANSACTION...) committed it"
                .into(),
        }
    }

    async fn ensure_marker_table(&self) -> Result<(), TargetError> {
        self.marker_ready
            .get_or_try_init(|| async {
                schema::ensure(&self.pool, &self.names, &[Table::Marker], true)
                    .await
                    .map_err(|e| match e {
                        SchemaError::Db { operation, source } => self.backend(operation, source),
                        SchemaError::Missing { detail, .. } => self.unsupported(&detail),
                        SchemaError::WrongShape { table, detail } => {
                            self.unsupported(&format!("marker table {table}: {detail}"))
                        }
                    })
            })
            .await
            .map(|_| ())
    }

    /// Whether the change's transaction is still open: releases the guard
    /// savepoint (`Ok(false)`: the database committed it by itself).
    async fn still_open(&self, tx: &mut MySqlConnection) -> Result<bool, sqlx::Error> {
        match sqlx::raw_sql(AssertSqlSafe(format!("RELEASE SAVEPOINT {GUARD}")))
            .execute(tx)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if error_number(&e) == Some(NO_SUCH_SAVEPOINT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Rolls back after a failure inside the transaction, before COMMIT:
    /// nothing was committed, whatever the rollback itself says.
    async fn not_committed(
        &self,
        tx: Transaction<'static, MySql>,
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
    Tx(Transaction<'static, MySql>),
    Plain(PoolConnection<MySql>),
}

/// What a MySQL change receives: a connection inside the change's open
/// transaction, or a plain pooled connection for a non-transactional change.
/// Dereferences to [`MySqlConnection`], so any sqlx executor call works:
///
/// ```no_run
/// use flamingock_core::{Change, ChangeMeta, ChangeResult};
/// use flamingock_mysql::{MysqlContext, MysqlTarget};
///
/// struct SeedCountries;
/// impl Change for SeedCountries {
///     type Target = MysqlTarget;
///     fn meta(&self) -> ChangeMeta { ChangeMeta::new("seed-countries").order("0002") }
///     async fn apply(&self, ctx: &mut MysqlContext) -> ChangeResult {
///         sqlx::query("INSERT INTO countries (code) VALUES (?), (?)")
///             .bind("es").bind("pt")
///             .execute(ctx.conn())
///             .await?;
///         Ok(())
///     }
/// }
/// ```
pub struct MysqlContext {
    conn: Conn,
    database: Arc<str>,
}

impl std::fmt::Debug for MysqlContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlContext")
            .field("transactional", &self.is_transactional())
            .field("database", &self.database)
            .finish()
    }
}

impl MysqlContext {
    /// The connection (inside the change's transaction when it has one).
    pub fn conn(&mut self) -> &mut MySqlConnection {
        self
    }

    /// Whether the change runs inside a transaction.
    pub fn is_transactional(&self) -> bool {
        matches!(self.conn, Conn::Tx(_))
    }

    /// The target's database (for the change's own qualified names; quote it
    /// with [`quote_ident`](crate::quote_ident)).
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Runs a script statement by statement (see [`split_statements`]; its
    /// `DELIMITER` lines are honoured), each as a plain text query (stored
    /// procedures and triggers cannot be prepared). Stops at the first failing
    /// statement, whose error says which one it was. Returns the total number
    /// of rows affected.
    pub async fn execute_script(&mut self, sql: &str) -> Result<u64, ScriptError> {
        let mut rows = 0;
        for (index, stmt) in split_statements(sql).into_iter().enumerate() {
            let done = sqlx::raw_sql(AssertSqlSafe(stmt))
                .execute(self.conn())
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

/// A statement of [`MysqlContext::execute_script`] failed. Its message holds
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

impl Deref for MysqlContext {
    type Target = MySqlConnection;
    fn deref(&self) -> &MySqlConnection {
        match &self.conn {
            Conn::Tx(tx) => tx,
            Conn::Plain(c) => c,
        }
    }
}

impl DerefMut for MysqlContext {
    fn deref_mut(&mut self) -> &mut MySqlConnection {
        match &mut self.conn {
            Conn::Tx(tx) => tx,
            Conn::Plain(c) => c,
        }
    }
}

impl flamingock_core::ChangeContext for MysqlContext {
    type Target = MysqlTarget;
}

impl TargetSystem for MysqlTarget {
    type Context = MysqlContext;

    fn id(&self) -> &str {
        &self.id
    }

    fn capabilities(&self) -> TargetCapabilities {
        flamingock_core::shared_audit::transactional_capabilities(self.shared.as_ref(), self.marker)
    }

    async fn begin(&self, mode: ContextMode) -> Result<MysqlContext, TargetError> {
        let database = Arc::from(self.names.database.as_str());
        let conn = match mode {
            ContextMode::Transaction => {
                if self.marker {
                    self.ensure_marker_table().await?;
                }
                // Safe to retry: nothing has run yet.
                let tx = idempotent("begin transaction", || async {
                    let mut conn = self.pool.acquire().await?;
                    if let Some(set) = &self.session_sql {
                        sqlx::raw_sql(AssertSqlSafe(set.to_string()))
                            .execute(&mut *conn)
                            .await?;
                    }
                    let mut tx = Transaction::begin(conn, None).await?;
                    sqlx::raw_sql(AssertSqlSafe(format!("SAVEPOINT {GUARD}")))
                        .execute(&mut *tx)
                        .await?;
                    Ok(tx)
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
        Ok(MysqlContext { conn, database })
    }

    async fn commit(&self, ctx: MysqlContext, with: CommitWith<'_>) -> Result<(), TargetError> {
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
        match self.still_open(&mut tx).await {
            Ok(true) => {}
            Ok(false) => {
                // Already committed by the database; the ROLLBACK only ends
                // the driver's idea of a transaction (a no-op on the server).
                let _ = tx.rollback().await;
                return Err(self.implicitly_committed());
            }
            Err(e) if is_connection_lost(&e) => return Err(self.backend("commit", e)),
            Err(e) => return Err(self.not_committed(tx, Box::new(e)).await),
        }
        match with {
            CommitWith::Audit(entry) => {
                let Some(shared) = &self.shared else {
                    let e = self.unsupported(
                        "asked to commit an audit entry but this target shares no audit store \
                         (build it with MysqlAuditStore::shared_target)",
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
                let Ok(token) = i64::try_from(m.fencing_token) else {
                    let e = self.unsupported("fencing token does not fit MySQL's BIGINT");
                    return Err(self.not_committed(tx, Box::new(e)).await);
                };
                let t = self.names.qualified(Table::Marker);
                // REPLACE (delete + insert of the same key): the same on
                // MySQL 8 and MariaDB, where the upsert syntaxes differ.
                let q = format!(
                    "REPLACE INTO {t} (change_id, run_id, token, created_at)
                     VALUES (?, ?, ?, UTC_TIMESTAMP(6))"
                );
                if let Err(e) = sqlx::query(AssertSqlSafe(q))
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
            // The server answered COMMIT with an error: it rolled back.
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

    async fn abort(&self, ctx: MysqlContext) -> Result<(), TargetError> {
        match ctx.conn {
            Conn::Tx(mut tx) => {
                let open = self.still_open(&mut tx).await;
                let rolled = tx.rollback().await;
                match open {
                    Ok(false) => return Err(self.implicitly_committed()),
                    Ok(true) => {}
                    Err(e) => return Err(self.backend("rollback", e)),
                }
                rolled.map_err(|e| self.backend("rollback", e))
            }
            Conn::Plain(_) => Ok(()),
        }
    }

    async fn marker(&self, change_id: &str) -> Result<Option<Marker>, TargetError> {
        if !self.marker {
            return Ok(None);
        }
        let t = self.names.qualified(Table::Marker);
        let q = format!("SELECT run_id, token FROM {t} WHERE change_id = ?");
        let row = match idempotent("read marker", || async {
            sqlx::query(AssertSqlSafe(q.clone()))
                .bind(change_id)
                .fetch_optional(&self.pool)
                .await
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
        let t = self.names.qualified(Table::Marker);
        let q = format!("DELETE FROM {t} WHERE change_id = ?");
        match idempotent("clear marker", || async {
            sqlx::query(AssertSqlSafe(q.clone()))
                .bind(change_id)
                .execute(&self.pool)
                .await
        })
        .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_undefined_table(&e) => Ok(()),
            Err(e) => Err(self.backend("clear marker", e)),
        }
    }
}
