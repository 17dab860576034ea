//! The audit store: history + current-state tables and the fence, on MySQL / MariaDB.

use std::sync::Arc;

use chrono::NaiveDateTime;
use flamingock_core::summary::AuditSummary;
use flamingock_core::{
    async_trait, AuditEntry, AuditState, AuditStore, ErrorInfo, HistoryFilter, LockProvider,
    RecoveryStrategy, StoreError, TxStrategy,
};
use sqlx::mysql::{MySqlPoolOptions, MySqlRow};
use sqlx::{AssertSqlSafe, MySqlConnection, MySqlPool, Row};

use crate::db_error::{boxed, is_connection_lost, is_retryable_conflict, is_undefined_column};
use crate::lock::MysqlLock;
use crate::names::{Names, Table};
use crate::schema::{self, SchemaError};
use crate::space::{idempotent, redact_url, Space};
use crate::target::{MysqlTarget, MysqlTargetBuilder};

/// Default table prefix.
pub const DEFAULT_PREFIX: &str = "flamingock";

/// Every table the store keeps (its lock's included, so that one `prepare`
/// creates all of them).
pub(crate) const STORE_TABLES: [Table; 4] =
    [Table::History, Table::Current, Table::Fence, Table::Lock];

/// The column list every read selects, in [`decode`]'s order. JSON columns
/// are read as text: MySQL has a JSON type, MariaDB a `LONGTEXT` alias.
const COLS: &str = "change_id, run_id, stage_id, author, change_order, target_system, state, \
                    created_at, duration_ms, hostname, runner_id, error_message, \
                    CAST(error_chain AS CHAR), CAST(metadata AS CHAR), tx_strategy, recovery, \
                    transactional, fencing_token, checksum";

const ENTRY: &str = "run_id, stage_id, change_id, author, change_order, target_system, state, \
                     state_rank, created_at, duration_ms, hostname, runner_id, error_message, \
                     error_chain, metadata, tx_strategy, recovery, transactional, fencing_token, \
                     checksum";

/// The store's statements, rendered once for its database and prefix.
#[derive(Debug)]
struct Statements {
    lock_fence: String,
    current_row: String,
    insert_history: String,
    insert_current: String,
    update_current: String,
    update_summary: String,
    snapshot: String,
    history: String,
    fence: String,
    claim_fence: String,
    summary: String,
}

impl Statements {
    fn new(n: &Names) -> Self {
        let (history, current, fence) = (
            n.qualified(Table::History),
            n.qualified(Table::Current),
            n.qualified(Table::Fence),
        );
        let marks = vec!["?"; 20].join(", ");
        Statements {
            lock_fence: format!(
                "SELECT fence, summary_rows, summary_applied, summary_digest, UTC_TIMESTAMP(6)
                   FROM {fence} WHERE id = 1 FOR UPDATE"
            ),
            current_row: format!(
                "SELECT created_at, state_rank, applied_term FROM {current}
                  WHERE change_id = ? FOR UPDATE"
            ),
            insert_history: format!("INSERT INTO {history} ({ENTRY}) VALUES ({marks})"),
            insert_current: format!(
                "INSERT INTO {current} ({ENTRY}, history_id, applied_term) VALUES ({marks}, ?, ?)"
            ),
            update_current: format!(
                "UPDATE {current} SET run_id = ?, stage_id = ?, change_id = ?, author = ?,
                        change_order = ?, target_system = ?, state = ?, state_rank = ?,
                        created_at = ?, duration_ms = ?, hostname = ?, runner_id = ?,
                        error_message = ?, error_chain = ?, metadata = ?, tx_strategy = ?,
                        recovery = ?, transactional = ?, fencing_token = ?, checksum = ?,
                        history_id = ?, applied_term = ?
                  WHERE change_id = ?"
            ),
            update_summary: format!(
                "UPDATE {fence} SET summary_rows = ?, summary_applied = ?, summary_digest = ?
                  WHERE id = 1"
            ),
            snapshot: format!("SELECT {COLS} FROM {current}"),
            history: format!(
                "SELECT {COLS} FROM {history}
                  WHERE (? IS NULL OR change_id = ?) AND (? IS NULL OR created_at >= ?)
                  ORDER BY created_at, id"
            ),
            fence: format!("SELECT fence FROM {fence} WHERE id = 1"),
            summary: format!(
                "SELECT summary_rows, summary_applied, summary_digest FROM {fence} WHERE id = 1"
            ),
            // One atomic increment whose new value comes back in the OK
            // packet (LAST_INSERT_ID(expr)); an upsert, so that a deleted
            // fence row heals itself (at 1; its summary unknown).
            claim_fence: format!(
                "INSERT INTO {fence} (id, fence) VALUES (1, LAST_INSERT_ID(1))
                 ON DUPLICATE KEY UPDATE fence = LAST_INSERT_ID(fence + 1)"
            ),
        }
    }
}

#[derive(Debug)]
pub(crate) struct StoreInner {
    pub(crate) space: Arc<Space>,
    id: String,
    describe: String,
    sql: Statements,
}

/// The MySQL / MariaDB [`AuditStore`].
///
/// Tables (in `database`, named `<prefix>_...`): `audit_history`
/// (append-only, one row per state transition, `created_at` from the
/// server's clock, UTC), `audit_current` (the latest entry per change, kept
/// in the same transaction as the history row), `fence` (one row, also the
/// applied-set summary) and `lock` (its [`MysqlLock`]). Every append is one
/// transaction that locks the fence row first, so appends serialise with
/// each other and with fence claims. Clones share the pool.
///
/// ```no_run
/// # async fn demo() -> Result<(), flamingock_core::StoreError> {
/// use flamingock_mysql::MysqlAuditStore;
/// let pool = sqlx::MySqlPool::connect_lazy("mysql://app@db/app").expect("url");
/// let store = MysqlAuditStore::builder(pool)
///     .prefix("flamingock")
///     .auto_create(true)
///     .build()
///     .await?;
/// # let _ = store; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct MysqlAuditStore {
    pub(crate) inner: Arc<StoreInner>,
}

/// Configures a [`MysqlAuditStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MysqlAuditStoreBuilder {
    pool: MySqlPool,
    database: Option<String>,
    prefix: String,
    auto_create: bool,
}

impl MysqlAuditStoreBuilder {
    /// The database of the tables (default: the one the pool connects to);
    /// created when missing and `auto_create` is on.
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.database = Some(database.into());
        self
    }

    /// The prefix of the table names (default `flamingock`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Whether `prepare` creates missing tables (default `true`). When off, a
    /// missing table is a [`StoreError::NotReady`] naming it and carrying the
    /// DDL to create it (also available from [`MysqlAuditStore::ddl`]).
    pub fn auto_create(mut self, yes: bool) -> Self {
        self.auto_create = yes;
        self
    }

    /// Validates the names. Does no I/O: the tables are only looked at (and
    /// made) by [`prepare`](AuditStore::prepare), when something is to be
    /// written. An unreachable server, a missing database or wrong
    /// credentials are reported by the first operation
    /// ([`MysqlAuditStore::connect`] connects at once).
    ///
    /// # Errors
    /// [`StoreError::NotReady`] naming an invalid database or prefix, or
    /// saying that neither the pool's URL nor the builder names a database.
    pub async fn build(self) -> Result<MysqlAuditStore, StoreError> {
        let options = self.pool.connect_options();
        let server = format!("{}:{}", options.get_host(), options.get_port());
        let Some(database) = self
            .database
            .clone()
            .or_else(|| options.get_database().map(str::to_owned))
        else {
            return Err(StoreError::InvalidConfig {
                store: format!("mysql({server})"),
                detail: "no database: name it in the URL (mysql://user@host/DATABASE) or with \
                         MysqlAuditStore::builder(..).database(..)"
                    .into(),
            });
        };
        let what = format!("mysql({database}.{}_*)", self.prefix);
        let names =
            Names::new(&database, &self.prefix).map_err(|detail| StoreError::InvalidConfig {
                store: what.clone(),
                detail,
            })?;
        let id = format!("mysql://{server}/{database}/{}", self.prefix);
        let describe = format!("mysql({database}.{}_audit_*)", self.prefix);
        Ok(MysqlAuditStore {
            inner: Arc::new(StoreInner {
                sql: Statements::new(&names),
                space: Arc::new(Space::new(
                    self.pool,
                    names,
                    self.auto_create,
                    STORE_TABLES.to_vec(),
                )),
                id,
                describe,
            }),
        })
    }
}

impl MysqlAuditStore {
    /// A builder over an existing pool.
    pub fn builder(pool: MySqlPool) -> MysqlAuditStoreBuilder {
        MysqlAuditStoreBuilder {
            pool,
            database: None,
            prefix: DEFAULT_PREFIX.to_owned(),
            auto_create: true,
        }
    }

    /// Connects a small pool (5 connections) to `url`
    /// (`mysql://user:password@host:3306/database`; `mariadb://` is taken as
    /// `mysql://`) and builds a store with the defaults. Wrong credentials or
    /// a missing database fail here, with the URL (password redacted) in the
    /// error.
    pub async fn connect(url: &str) -> Result<MysqlAuditStore, StoreError> {
        let shown = || format!("mysql({})", redact_url(url));
        let pool = connect_pool(url, 5)
            .await
            .map_err(|source| StoreError::Backend {
                store: shown(),
                operation: "connect",
                source: boxed(source),
            })?;
        Self::builder(pool).build().await
    }

    /// A builder for a transactional target on the same database whose
    /// changes commit together with their APPLIED entry (shared-transaction
    /// strategy); finish it with `build().await`. See [`MysqlTarget`] for
    /// what MySQL's implicit commit at DDL means for such changes.
    pub fn shared_target(&self, id: impl Into<String>) -> MysqlTargetBuilder {
        MysqlTarget::shared(id.into(), self.clone())
    }

    /// The lock kept in the same database under the same prefix.
    pub fn lock(&self) -> MysqlLock {
        MysqlLock::from_space(self.inner.space.clone())
    }

    /// The pool.
    pub fn pool(&self) -> &MySqlPool {
        &self.inner.space.pool
    }

    /// The database of the tables.
    pub fn database(&self) -> &str {
        &self.inner.space.names.database
    }

    /// The prefix of the table names.
    pub fn prefix(&self) -> &str {
        &self.inner.space.names.prefix
    }

    /// The SQL script that creates the store's tables (for `auto_create(false)` deployments).
    pub fn ddl(&self) -> String {
        schema::ddl(&self.inner.space.names, &STORE_TABLES)
    }

    fn backend(&self, operation: &'static str, source: sqlx::Error) -> StoreError {
        StoreError::Backend {
            store: self.inner.describe.clone(),
            operation,
            source: boxed(source),
        }
    }

    fn table(&self, t: Table) -> String {
        self.inner.space.names.display(t)
    }

    pub(crate) fn schema_error(&self, e: SchemaError) -> StoreError {
        schema_to_store(&self.inner.describe, e)
    }

    /// The fence check, history row, current-state row and summary, on a
    /// connection inside an open transaction (the change's, or the append's
    /// own): the fence row is locked first, so a runner whose token is below
    /// the fence writes nothing and gets [`StoreError::Fenced`]; the caller
    /// rolls back then.
    async fn append_in(
        &self,
        conn: &mut MySqlConnection,
        entry: &AuditEntry,
    ) -> Result<(), StoreError> {
        self.append_statements(conn, entry)
            .await?
            .map_err(|e| self.backend("append", e))
    }

    /// [`append_in`](Self::append_in) with the driver's error kept apart,
    /// so the standalone append can tell a deadlock from the rest.
    async fn append_statements(
        &self,
        conn: &mut MySqlConnection,
        entry: &AuditEntry,
    ) -> Result<Result<(), sqlx::Error>, StoreError> {
        let sql = &self.inner.sql;
        let token = i64::try_from(entry.fencing_token).map_err(|_| StoreError::Malformed {
            store: self.inner.describe.clone(),
            what: format!("audit entry for change '{}'", entry.change_id),
            detail: format!(
                "fencing token {} does not fit MySQL's BIGINT",
                entry.fencing_token
            ),
        })?;
        let fence_row = match sqlx::query(AssertSqlSafe(sql.lock_fence.as_str()))
            .fetch_optional(&mut *conn)
            .await
        {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let Some(fence_row) = fence_row else {
            return Err(StoreError::NotReady {
                store: self.inner.describe.clone(),
                detail: format!(
                    "the fence row of {} is missing (deleted by hand?); run prepare or claim the fence again",
                    self.table(Table::Fence)
                ),
            });
        };
        let bad_fence = |e: sqlx::Error| StoreError::Malformed {
            store: self.inner.describe.clone(),
            what: format!("row of {}", self.table(Table::Fence)),
            detail: e.to_string(),
        };
        let fence: i64 = fence_row.try_get(0).map_err(bad_fence)?;
        let summary: (Option<i64>, Option<i64>, Option<i64>) = (
            fence_row.try_get(1).map_err(bad_fence)?,
            fence_row.try_get(2).map_err(bad_fence)?,
            fence_row.try_get(3).map_err(bad_fence)?,
        );
        let now: NaiveDateTime = fence_row.try_get(4).map_err(bad_fence)?;
        if fence > token {
            return Err(StoreError::Fenced {
                store: self.inner.describe.clone(),
                token: entry.fencing_token,
                fence: u64::try_from(fence).unwrap_or(0),
            });
        }
        let current = match sqlx::query(AssertSqlSafe(sql.current_row.as_str()))
            .bind(&entry.change_id)
            .fetch_optional(&mut *conn)
            .await
        {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let current: Option<(NaiveDateTime, i16, i64)> = match current {
            None => None,
            Some(r) => {
                let bad = |e: sqlx::Error| StoreError::Malformed {
                    store: self.inner.describe.clone(),
                    what: format!(
                        "row of {} for change '{}'",
                        self.table(Table::Current),
                        entry.change_id
                    ),
                    detail: e.to_string(),
                };
                Some((
                    r.try_get(0).map_err(bad)?,
                    r.try_get(1).map_err(bad)?,
                    r.try_get(2).map_err(bad)?,
                ))
            }
        };
        let (message, chain) = match &entry.error {
            Some(e) => (
                Some(e.message.as_str()),
                Some(serde_json::to_string(&e.chain).unwrap_or_else(|_| "[]".into())),
            ),
            None => (None, None),
        };
        let metadata = serde_json::to_string(&entry.metadata).unwrap_or_else(|_| "null".into());
        let rank = i16::from(entry.state.rank());
        let duration = i64::try_from(entry.duration_ms).unwrap_or(i64::MAX);
        macro_rules! bind_entry {
            ($q:expr) => {
                $q.bind(&entry.run_id)
                    .bind(&entry.stage_id)
                    .bind(&entry.change_id)
                    .bind(&entry.author)
                    .bind(&entry.order)
                    .bind(&entry.target_system)
                    .bind(entry.state.as_str())
                    .bind(rank)
                    .bind(now)
                    .bind(duration)
                    .bind(&entry.hostname)
                    .bind(&entry.runner_id)
                    .bind(message)
                    .bind(chain.as_deref())
                    .bind(metadata.as_str())
                    .bind(entry.tx_strategy.as_str())
                    .bind(entry.recovery.as_str())
                    .bind(entry.transactional)
                    .bind(token)
                    .bind(entry.checksum.as_deref())
            };
        }
        let done = match bind_entry!(sqlx::query(AssertSqlSafe(sql.insert_history.as_str())))
            .execute(&mut *conn)
            .await
        {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        let history_id = i64::try_from(done.last_insert_id()).unwrap_or(i64::MAX);
        let term = flamingock_core::summary::applied_term(entry);
        // Replace the current row only when the new entry supersedes it
        // (created_at, then state rank), as the snapshot's reduction does.
        let prev_term = match current {
            None => {
                let q = bind_entry!(sqlx::query(AssertSqlSafe(sql.insert_current.as_str())))
                    .bind(history_id)
                    .bind(term);
                if let Err(e) = q.execute(&mut *conn).await {
                    return Ok(Err(e));
                }
                None
            }
            Some((at, cur_rank, cur_term)) if (now, rank) > (at, cur_rank) => {
                let q = bind_entry!(sqlx::query(AssertSqlSafe(sql.update_current.as_str())))
                    .bind(history_id)
                    .bind(term)
                    .bind(&entry.change_id);
                if let Err(e) = q.execute(&mut *conn).await {
                    return Ok(Err(e));
                }
                Some(cur_term)
            }
            Some(_) => return Ok(Ok(())),
        };
        // Move the summary by exactly what the current row held before and
        // holds now, under the fence row's lock; NULL (unknown) stays NULL.
        if let (Some(rows), Some(applied), Some(digest)) = summary {
            let inserted = i64::from(prev_term.is_none());
            let was = i64::from(prev_term.unwrap_or(0) != 0);
            let is = i64::from(term != 0);
            let q = sqlx::query(AssertSqlSafe(sql.update_summary.as_str()))
                .bind(rows + inserted)
                .bind(applied - was + is)
                .bind(digest ^ prev_term.unwrap_or(0) ^ term);
            if let Err(e) = q.execute(&mut *conn).await {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }

    fn decode_all(&self, rows: Vec<MySqlRow>, t: Table) -> Result<Vec<AuditEntry>, StoreError> {
        let table = self.table(t);
        rows.iter()
            .map(|r| decode(r).map_err(|m| m.into_store(&self.inner.describe, &table)))
            .collect()
    }
}

/// A pool for `url` (`mariadb://` taken as `mysql://`) of at most `max` connections.
pub(crate) async fn connect_pool(url: &str, max: u32) -> Result<MySqlPool, sqlx::Error> {
    use sqlx::ConnectOptions;
    use std::str::FromStr;
    let url = normalise_url(url);
    let options = sqlx::mysql::MySqlConnectOptions::from_str(&url)?
        .log_slow_statements(SLOW_STATEMENT_LEVEL, SLOW_STATEMENT_THRESHOLD);
    MySqlPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(std::time::Duration::from_secs(30))
        .connect_with(options)
        .await
}

/// `mariadb://...` → `mysql://...` (the same protocol; sqlx knows the latter).
pub(crate) fn normalise_url(url: &str) -> String {
    match url.strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => url.to_owned(),
    }
}

/// sqlx warns about every statement slower than a second: migrations are
/// expected to take that long, so the connections this crate opens report
/// them at INFO instead.
const SLOW_STATEMENT_LEVEL: log::LevelFilter = log::LevelFilter::Info;

/// The threshold of `SLOW_STATEMENT_LEVEL` (sqlx's default).
const SLOW_STATEMENT_THRESHOLD: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) fn schema_to_store(store: &str, e: SchemaError) -> StoreError {
    match e {
        SchemaError::Missing { detail, .. } => StoreError::NotReady {
            store: store.to_owned(),
            detail,
        },
        SchemaError::WrongShape { table, detail } => StoreError::Malformed {
            store: store.to_owned(),
            what: format!("table {table}"),
            detail,
        },
        SchemaError::Db { operation, source } => StoreError::Backend {
            store: store.to_owned(),
            operation,
            source: boxed(source),
        },
    }
}

/// A row that does not decode: which change, and what is wrong.
struct BadRow {
    key: String,
    detail: String,
}

impl BadRow {
    fn into_store(self, store: &str, table: &str) -> StoreError {
        StoreError::Malformed {
            store: store.to_owned(),
            what: format!("row of {table} for change '{}'", self.key),
            detail: self.detail,
        }
    }
}

/// Decodes a row selected with [`COLS`]; never panics.
fn decode(r: &MySqlRow) -> Result<AuditEntry, BadRow> {
    let key: String = r.try_get(0).map_err(|e| BadRow {
        key: "?".into(),
        detail: format!("change_id: {e}"),
    })?;
    let bad = |col: &str, e: &dyn std::fmt::Display| BadRow {
        key: key.clone(),
        detail: format!("{col}: {e}"),
    };
    macro_rules! get {
        ($i:expr, $col:expr) => {
            r.try_get($i).map_err(|e| bad($col, &e))?
        };
    }
    let state: String = get!(6, "state");
    let state: AuditState = state.parse().map_err(|e| bad("state", &e))?;
    let duration: i64 = get!(8, "duration_ms");
    let token: i64 = get!(17, "fencing_token");
    let strategy: String = get!(14, "tx_strategy");
    let recovery: String = get!(15, "recovery");
    let message: Option<String> = get!(11, "error_message");
    let chain: Option<String> = get!(12, "error_chain");
    let chain: Option<Vec<String>> = chain
        .map(|c| serde_json::from_str(&c))
        .transpose()
        .map_err(|e| bad("error_chain", &e))?;
    let metadata: Option<String> = get!(13, "metadata");
    let metadata: serde_json::Value = match metadata {
        Some(m) => serde_json::from_str(&m).map_err(|e| bad("metadata", &e))?,
        None => serde_json::Value::Null,
    };
    let created_at: NaiveDateTime = get!(7, "created_at");
    let mut e = AuditEntry::new(
        key.clone(),
        state,
        u64::try_from(token).map_err(|_| bad("fencing_token", &format!("negative ({token})")))?,
    );
    e.run_id = get!(1, "run_id");
    e.stage_id = get!(2, "stage_id");
    e.author = get!(3, "author");
    e.order = get!(4, "change_order");
    e.target_system = get!(5, "target_system");
    e.created_at = created_at.and_utc();
    e.duration_ms = u64::try_from(duration)
        .map_err(|_| bad("duration_ms", &format!("negative ({duration})")))?;
    e.hostname = get!(9, "hostname");
    e.runner_id = get!(10, "runner_id");
    e.error = message.map(|message| ErrorInfo {
        message,
        chain: chain.unwrap_or_default(),
    });
    e.metadata = metadata;
    e.tx_strategy = strategy
        .parse::<TxStrategy>()
        .map_err(|e| bad("tx_strategy", &e))?;
    e.recovery = recovery
        .parse::<RecoveryStrategy>()
        .map_err(|e| bad("recovery", &e))?;
    e.transactional = get!(16, "transactional");
    e.checksum = get!(18, "checksum");
    Ok(e)
}

/// How often a standalone append is tried again after InnoDB rolled its
/// transaction back as a deadlock victim or a lock wait timed out (nothing
/// of it was written then).
const APPEND_ATTEMPTS: usize = 5;

#[async_trait]
impl AuditStore for MysqlAuditStore {
    fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    fn store_id(&self) -> &str {
        &self.inner.id
    }

    async fn prepare(&self) -> Result<(), StoreError> {
        self.inner
            .space
            .ready()
            .await
            .map_err(|e| self.schema_error(e))
    }

    async fn claim_fence(&self) -> Result<u64, StoreError> {
        // Retrying a claim whose answer was lost is harmless: it only skips
        // an epoch, and this runner uses the value it finally reads back.
        let epoch = idempotent("claim the fence", || async {
            let done = sqlx::query(AssertSqlSafe(self.inner.sql.claim_fence.as_str()))
                .execute(&self.inner.space.pool)
                .await?;
            Ok(done.last_insert_id())
        })
        .await
        .map_err(|e| self.backend("claim the fence", e))?;
        Ok(epoch)
    }

    async fn fence(&self) -> Result<u64, StoreError> {
        let f: Option<i64> = match idempotent("read fence", || async {
            sqlx::query_scalar(AssertSqlSafe(self.inner.sql.fence.as_str()))
                .fetch_optional(&self.inner.space.pool)
                .await
        })
        .await
        {
            Err(e) if self.inner.space.absent(&e) => None,
            r => r.map_err(|e| self.backend("read fence", e))?,
        };
        let f = f.unwrap_or(0);
        u64::try_from(f).map_err(|_| StoreError::Malformed {
            store: self.inner.describe.clone(),
            what: format!("row of {}", self.table(Table::Fence)),
            detail: format!("negative fence {f}"),
        })
    }

    async fn append(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut tx = self
                .inner
                .space
                .pool
                .begin()
                .await
                .map_err(|e| self.backend("append", e))?;
            let outcome = match self.append_statements(&mut tx, entry).await {
                Ok(Ok(())) => match tx.commit().await {
                    Ok(()) => return Ok(()),
                    // Not retried: a COMMIT lost with its connection may have happened.
                    Err(e) => return Err(self.backend("append", e)),
                },
                Ok(Err(e)) => Err(e),
                Err(store_error) => Ok(store_error),
            };
            // Nothing of this transaction was committed from here on.
            if let Err(e) = tx.rollback().await {
                if !is_connection_lost(&e) {
                    tracing::warn!(error = %e, "rollback of an audit append failed");
                }
            }
            match outcome {
                Ok(store_error) => return Err(store_error),
                Err(e) if is_retryable_conflict(&e) && attempt < APPEND_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "audit append met a deadlock; retrying");
                }
                Err(e) => return Err(self.backend("append", e)),
            }
        }
    }

    async fn snapshot(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = match idempotent("read snapshot", || async {
            sqlx::query(AssertSqlSafe(self.inner.sql.snapshot.as_str()))
                .fetch_all(&self.inner.space.pool)
                .await
        })
        .await
        {
            Err(e) if self.inner.space.absent(&e) => return Ok(Vec::new()),
            r => r.map_err(|e| self.backend("read snapshot", e))?,
        };
        let mut out = self.decode_all(rows, Table::Current)?;
        out.sort_unstable_by(|a, b| a.change_id.cmp(&b.change_id));
        Ok(out)
    }

    async fn summary(&self) -> Result<Option<AuditSummary>, StoreError> {
        let row: Option<(Option<i64>, Option<i64>, Option<i64>)> =
            match idempotent("read the summary", || async {
                sqlx::query_as(AssertSqlSafe(self.inner.sql.summary.as_str()))
                    .fetch_optional(&self.inner.space.pool)
                    .await
            })
            .await
            {
                Err(e) if self.inner.space.absent(&e) => return Ok(None),
                // A fence table without the summary columns: read the
                // snapshot; prepare reports the table's shape.
                Err(e) if is_undefined_column(&e) => return Ok(None),
                r => r.map_err(|e| self.backend("read the summary", e))?,
            };
        Ok(
            row.and_then(|(rows, applied, digest)| {
                AuditSummary::from_stored(rows, applied, digest)
            }),
        )
    }

    async fn history(&self, filter: &HistoryFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let since = filter.since.map(|t| t.naive_utc());
        let rows = match idempotent("read history", || async {
            sqlx::query(AssertSqlSafe(self.inner.sql.history.as_str()))
                .bind(filter.change_id.as_deref())
                .bind(filter.change_id.as_deref())
                .bind(since)
                .bind(since)
                .fetch_all(&self.inner.space.pool)
                .await
        })
        .await
        {
            Err(e) if self.inner.space.absent(&e) => return Ok(Vec::new()),
            r => r.map_err(|e| self.backend("read history", e))?,
        };
        self.decode_all(rows, Table::History)
    }

    fn default_lock(&self) -> Option<Arc<dyn LockProvider>> {
        Some(Arc::new(self.lock()))
    }
}

/// The shared-transaction write: the same statements as
/// [`AuditStore::append`] (the fence row locked first, then the history row,
/// the current row and the summary), on the connection of the change's
/// transaction.
impl flamingock_core::AppendInTransaction for MysqlAuditStore {
    type Transaction = MySqlConnection;

    async fn append_in_transaction(
        &self,
        tx: &mut MySqlConnection,
        entry: &AuditEntry,
    ) -> Result<(), StoreError> {
        self.append_in(tx, entry).await
    }
}
