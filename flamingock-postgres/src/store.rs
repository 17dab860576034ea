//! The audit store: history + current-state tables and the fence, on PostgreSQL.

use flamingock_core::summary::AuditSummary;
use std::sync::Arc;

use flamingock_core::{
    async_trait, AuditEntry, AuditState, AuditStore, ErrorInfo, HistoryFilter, LockProvider,
    RecoveryStrategy, StoreError, TxStrategy,
};
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Executor, PgPool, Postgres, Row, SqlSafeStr, SqlStr};

use crate::lock::PostgresLock;
use crate::names::{Names, Table};
use crate::schema::{self, SchemaError};
use crate::space::{idempotent, redact_url, Space};
use crate::target::{PostgresTarget, PostgresTargetBuilder};

/// Default schema.
pub const DEFAULT_SCHEMA: &str = "public";
/// Default table prefix.
pub const DEFAULT_PREFIX: &str = "flamingock";

/// Every table the store keeps (its lock's included, so that one `prepare`
/// creates all of them).
pub(crate) const STORE_TABLES: [Table; 4] =
    [Table::History, Table::Current, Table::Fence, Table::Lock];

/// The column list every read selects, in [`decode`]'s order.
const COLS: &str = "change_id, run_id, stage_id, author, change_order, target_system, state, \
                    created_at, duration_ms, hostname, runner_id, error_message, error_chain, \
                    metadata, tx_strategy, recovery, transactional, fencing_token, checksum";

/// The store's statements, rendered once for its schema and prefix.
#[derive(Debug)]
struct Statements {
    append: SqlStr,
    snapshot: SqlStr,
    history: SqlStr,
    fence: SqlStr,
    claim_fence: SqlStr,
    summary: SqlStr,
}

fn sql(s: String) -> SqlStr {
    AssertSqlSafe(s).into_sql_str()
}

impl Statements {
    fn new(n: &Names) -> Self {
        let (history, current, fence) = (
            n.qualified(Table::History),
            n.qualified(Table::Current),
            n.qualified(Table::Fence),
        );
        const ENTRY: &str = "run_id, stage_id, change_id, author, change_order, target_system, \
                             state, state_rank, duration_ms, hostname, runner_id, error_message, \
                             error_chain, metadata, tx_strategy, recovery, transactional, \
                             fencing_token, checksum";
        const UPDATE: &str = "history_id = EXCLUDED.history_id, run_id = EXCLUDED.run_id, \
             stage_id = EXCLUDED.stage_id, author = EXCLUDED.author, \
             change_order = EXCLUDED.change_order, target_system = EXCLUDED.target_system, \
             state = EXCLUDED.state, state_rank = EXCLUDED.state_rank, \
             created_at = EXCLUDED.created_at, duration_ms = EXCLUDED.duration_ms, \
             hostname = EXCLUDED.hostname, runner_id = EXCLUDED.runner_id, \
             error_message = EXCLUDED.error_message, error_chain = EXCLUDED.error_chain, \
             metadata = EXCLUDED.metadata, tx_strategy = EXCLUDED.tx_strategy, \
             recovery = EXCLUDED.recovery, transactional = EXCLUDED.transactional, \
             fencing_token = EXCLUDED.fencing_token, checksum = EXCLUDED.checksum, \
             applied_term = EXCLUDED.applied_term, prev_term = cur.applied_term";
        // One statement, one round trip: lock the fence row (so appends
        // serialise with each other and with claim_fence's UPDATE), insert the
        // history row only when the token is not below the fence, replace the
        // current-state row only when the new entry supersedes it (created_at,
        // then state rank), move the applied-set summary in the fence row by
        // what the current row held before and holds now (the upsert returns
        // both, read under its row lock), and say whether the write happened.
        let append = format!(
            "WITH f AS MATERIALIZED (SELECT fence FROM {fence} WHERE id = 1 FOR UPDATE),
             h AS (
               INSERT INTO {history} ({ENTRY})
               SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19
                 FROM f WHERE f.fence <= $18
               RETURNING *
             ),
             c AS (
               INSERT INTO {current} AS cur (history_id, created_at, {ENTRY}, applied_term)
               SELECT id, created_at, {ENTRY}, $20 FROM h
               ON CONFLICT (change_id) DO UPDATE SET {UPDATE}
               WHERE (EXCLUDED.created_at, EXCLUDED.state_rank) > (cur.created_at, cur.state_rank)
               RETURNING prev_term, applied_term
             ),
             s AS (
               UPDATE {fence} AS fs SET
                 summary_rows = fs.summary_rows + d.inserted,
                 summary_applied = fs.summary_applied - d.was_applied + d.is_applied,
                 summary_digest = fs.summary_digest # d.prev # d.now
               FROM (SELECT (prev_term IS NULL)::int AS inserted,
                            (coalesce(prev_term, 0) <> 0)::int AS was_applied,
                            (applied_term <> 0)::int AS is_applied,
                            coalesce(prev_term, 0) AS prev, applied_term AS now
                       FROM c) d
               WHERE fs.id = 1
             )
             SELECT f.fence, EXISTS (SELECT 1 FROM h) FROM f"
        );
        Statements {
            append: sql(append),
            snapshot: sql(format!("SELECT {COLS} FROM {current}")),
            history: sql(format!(
                "SELECT {COLS} FROM {history}
                  WHERE ($1::text IS NULL OR change_id = $1)
                    AND ($2::timestamptz IS NULL OR created_at >= $2)
                  ORDER BY created_at, id"
            )),
            fence: sql(format!("SELECT fence FROM {fence} WHERE id = 1")),
            summary: sql(format!(
                "SELECT summary_rows, summary_applied, summary_digest FROM {fence} WHERE id = 1"
            )),
            // One atomic increment; an upsert, so that a deleted fence row
            // heals itself (at 1, above nothing: appends carry epochs >= 1).
            claim_fence: sql(format!(
                "INSERT INTO {fence} AS f (id, fence) VALUES (1, 1)
                 ON CONFLICT (id) DO UPDATE SET fence = f.fence + 1
                 RETURNING fence"
            )),
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

/// The PostgreSQL [`AuditStore`].
///
/// Tables (in `schema`, named `<prefix>_...`): `audit_history` (append-only,
/// one row per state transition, `created_at` from the server's clock),
/// `audit_current` (the latest entry per change, kept in the same statement
/// as the history row), `fence` (one row) and `lock` (its
/// [`PostgresLock`]). Clones share the pool.
///
/// ```no_run
/// # async fn demo() -> Result<(), flamingock_core::StoreError> {
/// use flamingock_postgres::PostgresAuditStore;
/// let pool = sqlx::PgPool::connect_lazy("postgres://app@db/app").expect("url");
/// let store = PostgresAuditStore::builder(pool)
///     .schema("ops")
///     .prefix("flamingock")
///     .auto_create(true)
///     .build()
///     .await?;
/// # let _ = store; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresAuditStore {
    pub(crate) inner: Arc<StoreInner>,
}

/// Configures a [`PostgresAuditStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct PostgresAuditStoreBuilder {
    pool: PgPool,
    schema: String,
    prefix: String,
    auto_create: bool,
    pooler: bool,
}

impl PostgresAuditStoreBuilder {
    /// Declares that the pool reaches PostgreSQL through a pooler in
    /// transaction mode (PgBouncer's `pool_mode = transaction`, the front of
    /// most hosted PostgreSQL), which hands each transaction whatever server
    /// connection is free (default `false`). Then no statement relies on the
    /// server connection outliving a transaction: statements are not kept
    /// prepared (unnamed), and every operation of the store, its lock and its
    /// targets runs inside a transaction of its own (two more round trips
    /// each). Build the pool with `statement_cache_capacity(0)` for your own
    /// statements too. A session-mode pooler needs nothing.
    pub fn transaction_pooler(mut self, yes: bool) -> Self {
        self.pooler = yes;
        self
    }

    /// The schema of the tables (default `public`); created when missing and `auto_create` is on.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The prefix of the table names (default `flamingock`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Whether `prepare` creates missing tables (default `true`). When off, a
    /// missing table is a [`StoreError::NotReady`] naming it and carrying the
    /// DDL to create it (also available from [`PostgresAuditStore::ddl`]).
    pub fn auto_create(mut self, yes: bool) -> Self {
        self.auto_create = yes;
        self
    }

    /// Validates the names. Does no I/O: a handle is built on every start,
    /// and a start with nothing pending is one read of the summary, so the
    /// tables are only looked at (and made) by
    /// [`prepare`](AuditStore::prepare), when something is to be written.
    /// An unreachable server, a missing database or wrong credentials are
    /// reported by the first operation, naming them
    /// ([`PostgresAuditStore::connect`] connects at once).
    pub async fn build(self) -> Result<PostgresAuditStore, StoreError> {
        let what = format!("postgres({}.{}_*)", self.schema, self.prefix);
        let names =
            Names::new(&self.schema, &self.prefix).map_err(|detail| StoreError::InvalidConfig {
                store: what.clone(),
                detail,
            })?;
        // The identity of the database, from the pool's options (PostgreSQL
        // takes the user name when no database is given).
        let options = self.pool.connect_options();
        let database = options
            .get_database()
            .unwrap_or(options.get_username())
            .to_owned();
        let server = format!("{}:{}", options.get_host(), options.get_port());
        let id = format!(
            "postgres://{server}/{database}/{}/{}",
            self.schema, self.prefix
        );
        let describe = format!(
            "postgres({database}: {}.{}_audit_*)",
            self.schema, self.prefix
        );
        Ok(PostgresAuditStore {
            inner: Arc::new(StoreInner {
                sql: Statements::new(&names),
                space: Arc::new(Space::new(
                    self.pool,
                    names,
                    self.auto_create,
                    self.pooler,
                    STORE_TABLES.to_vec(),
                )),
                id,
                describe,
            }),
        })
    }
}

impl PostgresAuditStore {
    /// A builder over an existing pool.
    pub fn builder(pool: PgPool) -> PostgresAuditStoreBuilder {
        crate::install_tls_provider();
        PostgresAuditStoreBuilder {
            pool,
            schema: DEFAULT_SCHEMA.to_owned(),
            prefix: DEFAULT_PREFIX.to_owned(),
            auto_create: true,
            pooler: false,
        }
    }

    /// Connects a small pool (5 connections) to `url` and builds a store with
    /// the defaults. Wrong credentials or a missing database fail here, with
    /// the URL (password redacted) in the error.
    ///
    /// Besides the driver's options (`sslmode`, `sslrootcert`,
    /// `statement-cache-capacity`...), the URL may say `pooler=transaction`:
    /// the server sits behind a pooler in transaction mode (see
    /// [`PostgresAuditStoreBuilder::transaction_pooler`]; the pool is then
    /// built without a statement cache). `pooler=session` and `pooler=none`
    /// need nothing.
    pub async fn connect(url: &str) -> Result<PostgresAuditStore, StoreError> {
        let shown = || format!("postgres({})", redact_url(url));
        let (url, pooler) =
            crate::pooler::split_url(url).map_err(|detail| StoreError::NotReady {
                store: shown(),
                detail,
            })?;
        let pool = connect_pool(&url, 5, pooler)
            .await
            .map_err(|source| StoreError::Backend {
                store: shown(),
                operation: "connect",
                source: crate::db_error::with_hint(source),
            })?;
        Self::builder(pool).transaction_pooler(pooler).build().await
    }

    /// A builder for a transactional target on the same database whose
    /// changes commit together with their APPLIED entry (shared-transaction
    /// strategy); finish it with `build().await`. Keep its
    /// [`idle_in_transaction_timeout`](crate::PostgresTargetBuilder::idle_in_transaction_timeout)
    /// no longer than the lock's lease.
    pub fn shared_target(&self, id: impl Into<String>) -> PostgresTargetBuilder {
        PostgresTarget::shared(id.into(), self.clone())
    }

    /// The lock kept in the same schema under the same prefix.
    pub fn lock(&self) -> PostgresLock {
        PostgresLock::from_space(self.inner.space.clone())
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.inner.space.pool
    }

    /// Whether the store was declared behind a transaction pooler
    /// ([`PostgresAuditStoreBuilder::transaction_pooler`]).
    pub fn is_behind_transaction_pooler(&self) -> bool {
        self.inner.space.pooler
    }

    /// The schema of the tables.
    pub fn schema(&self) -> &str {
        &self.inner.space.names.schema
    }

    /// The SQL script that creates the store's tables (for `auto_create(false)` deployments).
    pub fn ddl(&self) -> String {
        schema::ddl(&self.inner.space.names, &STORE_TABLES)
    }

    fn backend(&self, operation: &'static str, source: sqlx::Error) -> StoreError {
        StoreError::Backend {
            store: self.inner.describe.clone(),
            operation,
            source: crate::db_error::with_hint(source),
        }
    }

    fn table(&self, t: Table) -> String {
        self.inner.space.names.display(t)
    }

    pub(crate) fn schema_error(&self, e: SchemaError) -> StoreError {
        schema_to_store(&self.inner.describe, e)
    }

    /// The fence check, history row and current-state row in one statement on
    /// `exec` (the pool, or the connection of a change's transaction).
    pub(crate) async fn append_on<'c, E>(
        &self,
        exec: E,
        entry: &AuditEntry,
    ) -> Result<(), StoreError>
    where
        E: Executor<'c, Database = Postgres>,
    {
        let token = i64::try_from(entry.fencing_token).map_err(|_| StoreError::Malformed {
            store: self.inner.describe.clone(),
            what: format!("audit entry for change '{}'", entry.change_id),
            detail: format!(
                "fencing token {} does not fit PostgreSQL's bigint",
                entry.fencing_token
            ),
        })?;
        let (message, chain) = match &entry.error {
            Some(e) => (Some(e.message.as_str()), Some(e.chain.as_slice())),
            None => (None, None),
        };
        let row = sqlx::query(self.inner.sql.append.clone())
            .persistent(self.inner.space.persistent())
            .bind(&entry.run_id)
            .bind(&entry.stage_id)
            .bind(&entry.change_id)
            .bind(&entry.author)
            .bind(&entry.order)
            .bind(&entry.target_system)
            .bind(entry.state.as_str())
            .bind(i16::from(entry.state.rank()))
            .bind(i64::try_from(entry.duration_ms).unwrap_or(i64::MAX))
            .bind(&entry.hostname)
            .bind(&entry.runner_id)
            .bind(message)
            .bind(chain)
            .bind(sqlx::types::Json(&entry.metadata))
            .bind(entry.tx_strategy.as_str())
            .bind(entry.recovery.as_str())
            .bind(entry.transactional)
            .bind(token)
            .bind(entry.checksum.as_deref())
            .bind(flamingock_core::summary::applied_term(entry))
            .fetch_optional(exec)
            .await
            .map_err(|e| self.backend("append", e))?;
        let Some(row) = row else {
            return Err(StoreError::NotReady {
                store: self.inner.describe.clone(),
                detail: format!(
                    "the fence row of {} is missing (deleted by hand?); run prepare or claim the fence again",
                    self.table(Table::Fence)
                ),
            });
        };
        let fence: i64 = row.try_get(0).map_err(|e| self.backend("append", e))?;
        let written: bool = row.try_get(1).map_err(|e| self.backend("append", e))?;
        if written {
            Ok(())
        } else {
            Err(StoreError::Fenced {
                store: self.inner.describe.clone(),
                token: entry.fencing_token,
                fence: u64::try_from(fence).unwrap_or(0),
            })
        }
    }

    fn decode_all(&self, rows: Vec<PgRow>, t: Table) -> Result<Vec<AuditEntry>, StoreError> {
        let table = self.table(t);
        rows.iter()
            .map(|r| decode(r).map_err(|m| m.into_store(&self.inner.describe, &table)))
            .collect()
    }
}

pub(crate) async fn connect_pool(url: &str, max: u32, pooler: bool) -> Result<PgPool, sqlx::Error> {
    crate::install_tls_provider();
    use sqlx::ConnectOptions;
    use std::str::FromStr;
    let mut options = sqlx::postgres::PgConnectOptions::from_str(url)?
        .log_slow_statements(SLOW_STATEMENT_LEVEL, SLOW_STATEMENT_THRESHOLD);
    // sqlx sends `extra_float_digits` by default, which PgBouncer refuses
    // unless told to ignore it; this crate reads floats in binary anyway.
    options = options.extra_float_digits(None);
    if pooler {
        options = options.statement_cache_capacity(0);
    }
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(std::time::Duration::from_secs(30))
        .connect_with(options)
        .await
}

/// sqlx warns about every statement slower than a second: migrations are
/// expected to take that long (DDL, waiting for a table lock), so the
/// connections this crate opens report them at INFO instead.
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
            source: crate::db_error::with_hint(source),
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
fn decode(r: &PgRow) -> Result<AuditEntry, BadRow> {
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
    let chain: Option<Vec<String>> = get!(12, "error_chain");
    let metadata: sqlx::types::Json<serde_json::Value> = get!(13, "metadata");
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
    e.created_at = get!(7, "created_at");
    e.duration_ms = u64::try_from(duration)
        .map_err(|_| bad("duration_ms", &format!("negative ({duration})")))?;
    e.hostname = get!(9, "hostname");
    e.runner_id = get!(10, "runner_id");
    e.error = message.map(|message| ErrorInfo {
        message,
        chain: chain.unwrap_or_default(),
    });
    e.metadata = metadata.0;
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

#[async_trait]
impl AuditStore for PostgresAuditStore {
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
        let epoch: i64 = idempotent("claim the fence", || async {
            let mut c = self.inner.space.conn().await?;
            let epoch = sqlx::query_scalar(self.inner.sql.claim_fence.clone())
                .persistent(self.inner.space.persistent())
                .fetch_one(&mut *c)
                .await?;
            c.finish().await?;
            Ok(epoch)
        })
        .await
        .map_err(|e| self.backend("claim the fence", e))?;
        u64::try_from(epoch).map_err(|_| StoreError::Malformed {
            store: self.inner.describe.clone(),
            what: format!("row of {}", self.table(Table::Fence)),
            detail: format!("negative fence {epoch}"),
        })
    }

    async fn fence(&self) -> Result<u64, StoreError> {
        let f: Option<i64> = match idempotent("read fence", || async {
            let mut c = self.inner.space.conn().await?;
            let f = sqlx::query_scalar(self.inner.sql.fence.clone())
                .persistent(self.inner.space.persistent())
                .fetch_optional(&mut *c)
                .await?;
            c.finish().await?;
            Ok(f)
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
        // Not retried: a statement lost with its connection may have committed.
        let mut c = self
            .inner
            .space
            .conn()
            .await
            .map_err(|e| self.backend("append", e))?;
        self.append_on(&mut *c, entry).await?;
        c.finish().await.map_err(|e| self.backend("append", e))
    }

    async fn snapshot(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = match idempotent("read snapshot", || async {
            let mut c = self.inner.space.conn().await?;
            let rows = sqlx::query(self.inner.sql.snapshot.clone())
                .persistent(self.inner.space.persistent())
                .fetch_all(&mut *c)
                .await?;
            c.finish().await?;
            Ok(rows)
        })
        .await
        {
            Err(e) if self.inner.space.absent(&e) => return Ok(Vec::new()),
            r => r.map_err(|e| self.backend("read snapshot", e))?,
        };
        let mut out = self.decode_all(rows, Table::Current)?;
        // Byte order, as `reduce_snapshot` sorts (the column's collation may differ).
        out.sort_unstable_by(|a, b| a.change_id.cmp(&b.change_id));
        Ok(out)
    }

    async fn summary(&self) -> Result<Option<AuditSummary>, StoreError> {
        let row: Option<(Option<i64>, Option<i64>, Option<i64>)> =
            match idempotent("read the summary", || async {
                let mut c = self.inner.space.conn().await?;
                let row = sqlx::query_as(self.inner.sql.summary.clone())
                    .persistent(self.inner.space.persistent())
                    .fetch_optional(&mut *c)
                    .await?;
                c.finish().await?;
                Ok(row)
            })
            .await
            {
                Err(e) if self.inner.space.absent(&e) => return Ok(None),
                // A fence table made before the summary existed (42703:
                // undefined column): read the snapshot; prepare reports the
                // table's shape.
                Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("42703") => {
                    return Ok(None)
                }
                r => r.map_err(|e| self.backend("read the summary", e))?,
            };
        Ok(
            row.and_then(|(rows, applied, digest)| {
                AuditSummary::from_stored(rows, applied, digest)
            }),
        )
    }

    async fn history(&self, filter: &HistoryFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = match idempotent("read history", || async {
            let mut c = self.inner.space.conn().await?;
            let rows = sqlx::query(self.inner.sql.history.clone())
                .persistent(self.inner.space.persistent())
                .bind(filter.change_id.as_deref())
                .bind(filter.since)
                .fetch_all(&mut *c)
                .await?;
            c.finish().await?;
            Ok(rows)
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

/// The shared-transaction write: the same one statement as
/// [`AuditStore::append`] (fence check, history row, current-state row), on
/// the connection of the change's transaction.
impl flamingock_core::AppendInTransaction for PostgresAuditStore {
    type Transaction = sqlx::PgConnection;

    async fn append_in_transaction(
        &self,
        tx: &mut sqlx::PgConnection,
        entry: &AuditEntry,
    ) -> Result<(), StoreError> {
        self.append_on(tx, entry).await
    }
}
