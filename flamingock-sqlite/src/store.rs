//! The SQLite audit store: append-only history, a current-state row per
//! change and the fence, all in one database file.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use flamingock_core::summary;
use flamingock_core::{
    async_trait, AuditEntry, AuditState, AuditStore, ErrorInfo, HistoryFilter, LockProvider,
    RecoveryStrategy, StoreError, TxStrategy,
};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection, SqlitePool};

use crate::connect::{self, PoolSettings};
use crate::lock::SqliteLock;
use crate::schema::{self, ident, q, EnsureError, TableDef};
use crate::source::{Source, SqliteSource};
use crate::target::{SqliteTarget, SqliteTargetBuilder};

/// The default table prefix.
pub const DEFAULT_PREFIX: &str = "flamingock";

/// An [`AuditStore`] in one SQLite database file.
///
/// Tables (prefix `flamingock` by default): `<prefix>_audit` (the history,
/// one row per state transition), `<prefix>_audit_current` (the latest
/// history row of each change, replaced in the same transaction as the
/// append when the new entry supersedes it) and `<prefix>_fence` (one row).
/// Every write runs in a `BEGIN IMMEDIATE` transaction: it takes the file's
/// write lock before reading the fence, so concurrent writers, in this
/// process or in others, queue behind SQLite's busy timeout instead of
/// failing when they try to upgrade a read transaction.
///
/// `created_at` is stamped by the store: the process clock at microsecond
/// precision, moved forward when needed so that it is strictly increasing
/// within the process and after the last history row of the file.
///
/// Clones share the same pool.
///
/// ```no_run
/// use flamingock_sqlite::SqliteAuditStore;
/// # async fn demo() -> Result<(), flamingock_core::StoreError> {
/// let store = SqliteAuditStore::connect("app.db").await?;
/// let custom = SqliteAuditStore::builder("app.db")
///     .prefix("migrations")
///     .auto_create(false)
///     .build()
///     .await?;
/// # let _ = (store, custom);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteAuditStore {
    pub(crate) inner: Arc<StoreInner>,
}

pub(crate) struct StoreInner {
    pub(crate) pool: SqlitePool,
    id: String,
    describe: String,
    file: String,
    prefix: String,
    auto_create: bool,
    tables: [TableDef; 3],
    sql: StoreSql,
    lock: SqliteLock,
    /// How long the switch to WAL may wait for other connections.
    busy_timeout: Duration,
    /// `prepare` succeeded on this handle: the tables exist, and a missing
    /// one is an error from now on (before, it means "nothing recorded").
    prepared: AtomicBool,
}

impl std::fmt::Debug for SqliteAuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteAuditStore")
            .field("file", &self.inner.file)
            .field("prefix", &self.inner.prefix)
            .field("auto_create", &self.inner.auto_create)
            .finish_non_exhaustive()
    }
}

struct StoreSql {
    fence_get: Arc<str>,
    fence_set: Arc<str>,
    last_created: Arc<str>,
    insert: Arc<str>,
    current_of: Arc<str>,
    current_set: Arc<str>,
    summary_get: Arc<str>,
    summary_move: Arc<str>,
    snapshot: Arc<str>,
    /// History queries by filter: [all, by change, since, by change and since],
    /// each able to use its index.
    history: [Arc<str>; 4],
}

impl StoreSql {
    fn new(prefix: &str) -> Self {
        let h = ident(&format!("{prefix}_audit"));
        let c = ident(&format!("{prefix}_audit_current"));
        let f = ident(&format!("{prefix}_fence"));
        let cols = schema::HISTORY_COLUMNS.join(", ");
        let hcols = schema::HISTORY_COLUMNS
            .iter()
            .map(|c| format!("h.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let insert_cols = &schema::HISTORY_COLUMNS[1..];
        let s = |x: String| -> Arc<str> { x.into() };
        StoreSql {
            fence_get: s(format!("SELECT token FROM {f} WHERE id = 1")),
            fence_set: s(format!(
                "INSERT INTO {f} (id, token) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET token = excluded.token"
            )),
            last_created: s(format!(
                "SELECT created_at FROM {h} ORDER BY id DESC LIMIT 1"
            )),
            insert: s(format!(
                "INSERT INTO {h} ({}) VALUES ({}) RETURNING id",
                insert_cols.join(", "),
                (1..=insert_cols.len())
                    .map(|i| format!("?{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            current_of: s(format!(
                "SELECT h.created_at, h.state, h.checksum FROM {c} c JOIN {h} h ON h.id = c.history_id WHERE c.change_id = ?1"
            )),
            summary_get: s(format!(
                "SELECT summary_rows, summary_applied, summary_digest FROM {f} WHERE id = 1"
            )),
            // SQLite has no XOR operator: (a | b) & ~(a & b), all bitwise, so
            // no 64-bit overflow.
            summary_move: s(format!(
                "UPDATE {f} SET summary_rows = summary_rows + ?1,
                                summary_applied = summary_applied + ?2,
                                summary_digest = (summary_digest | ?3) & ~(summary_digest & ?3)
                  WHERE id = 1"
            )),
            current_set: s(format!(
                "INSERT INTO {c} (change_id, history_id) VALUES (?1, ?2) \
                 ON CONFLICT (change_id) DO UPDATE SET history_id = excluded.history_id"
            )),
            snapshot: s(format!(
                "SELECT {hcols} FROM {c} c JOIN {h} h ON h.id = c.history_id ORDER BY c.change_id"
            )),
            history: [
                "",
                "WHERE change_id = ?1",
                "WHERE created_at >= ?1",
                "WHERE change_id = ?1 AND created_at >= ?2",
            ]
            .map(|w| s(format!("SELECT {cols} FROM {h} {w} ORDER BY id"))),
        }
    }
}

/// Configures a [`SqliteAuditStore`]: table prefix, `auto_create` and, for a
/// database this crate opens, the pool's settings.
#[derive(Debug)]
#[must_use]
pub struct SqliteAuditStoreBuilder {
    source: Source,
    prefix: String,
    auto_create: bool,
    busy_timeout: Option<Duration>,
    max_connections: Option<u32>,
}

impl SqliteAuditStoreBuilder {
    /// Table prefix (default `flamingock`): tables are `<prefix>_audit`,
    /// `<prefix>_audit_current`, `<prefix>_fence` and `<prefix>_lock`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Whether [`AuditStore::prepare`] creates missing tables (default true).
    /// When false, a missing table is [`StoreError::NotReady`] naming it.
    pub fn auto_create(mut self, yes: bool) -> Self {
        self.auto_create = yes;
        self
    }

    /// How long a write waits for another writer's lock (default 30 s). For
    /// a database this crate opens; with your own pool, set it on the pool's
    /// options (setting it here is then an error at `build`).
    pub fn busy_timeout(mut self, d: Duration) -> Self {
        self.busy_timeout = Some(d);
        self
    }

    /// Pool size for a file (default 4; an in-memory database always has
    /// exactly one connection). For a database this crate opens, like
    /// [`busy_timeout`](Self::busy_timeout).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = Some(n);
        self
    }

    /// Opens the database (a pool, no statement) and returns the store.
    /// Writes nothing: a missing file is created, the tables are created (or
    /// checked) and the file switched to WAL journal mode by
    /// [`AuditStore::prepare`], which the runner calls before it writes;
    /// reads of a store that does not exist yet answer "nothing recorded" and
    /// leave no file behind.
    pub async fn build(self) -> Result<SqliteAuditStore, StoreError> {
        let invalid = |detail: String| StoreError::InvalidConfig {
            store: format!("sqlite(tables {}_*)", self.prefix.escape_debug()),
            detail,
        };
        if let Err(e) =
            flamingock_core::names::plain_identifier("table prefix", &self.prefix, &[], 100)
        {
            return Err(invalid(e.to_string()));
        }
        let mut settings = PoolSettings::default();
        let pool = match self.source {
            Source::Pool(p) => {
                if self.busy_timeout.is_some() || self.max_connections.is_some() {
                    return Err(invalid(
                        "busy_timeout and max_connections apply to a database this crate opens; \
                         set them on your pool's options"
                            .to_owned(),
                    ));
                }
                p
            }
            Source::Location(loc) => {
                settings.busy_timeout = self.busy_timeout.unwrap_or(settings.busy_timeout);
                settings.max_connections = self.max_connections.unwrap_or(settings.max_connections);
                connect::open_pool(&loc, settings)
                    .await
                    .map_err(|e| StoreError::Backend {
                        store: format!(
                            "sqlite({}, tables {}_*)",
                            connect::display_location(&loc),
                            self.prefix
                        ),
                        operation: "open the database",
                        source: Box::new(e),
                    })?
            }
        };
        Ok(SqliteAuditStore::with(
            pool,
            self.prefix,
            self.auto_create,
            settings.busy_timeout,
        ))
    }
}

impl SqliteAuditStore {
    /// Opens the database at `source` (a file path, a `sqlite:` URL such as
    /// `sqlite::memory:` or `sqlite://app.db?mode=ro`, or a pool) with the
    /// default settings; the file is created by the first write (see
    /// [`SqliteAuditStoreBuilder::build`]).
    pub async fn connect(source: impl Into<SqliteSource>) -> Result<Self, StoreError> {
        Self::builder(source).build().await
    }

    /// A builder for the database at `source` (see [`SqliteSource`]). With a
    /// pool you configured: set `busy_timeout` on it (the default 5 s of sqlx
    /// is short for several processes), and give an in-memory database
    /// exactly one connection.
    pub fn builder(source: impl Into<SqliteSource>) -> SqliteAuditStoreBuilder {
        SqliteAuditStoreBuilder {
            source: source.into().0,
            prefix: DEFAULT_PREFIX.to_owned(),
            auto_create: true,
            busy_timeout: None,
            max_connections: None,
        }
    }

    fn with(pool: SqlitePool, prefix: String, auto_create: bool, busy_timeout: Duration) -> Self {
        let who = connect::identity(&pool);
        let describe = format!("sqlite({}, tables {prefix}_*)", who.display);
        let lock = SqliteLock::internal(
            pool.clone(),
            &prefix,
            &who.display,
            auto_create,
            busy_timeout,
        );
        SqliteAuditStore {
            inner: Arc::new(StoreInner {
                id: format!("sqlite:{}#{prefix}", who.id),
                describe,
                file: who.display,
                tables: schema::audit_tables(&prefix),
                sql: StoreSql::new(&prefix),
                prefix,
                auto_create,
                lock,
                pool,
                busy_timeout,
                prepared: AtomicBool::new(false),
            }),
        }
    }

    /// The pool (e.g. to read your own tables).
    pub fn pool(&self) -> &SqlitePool {
        &self.inner.pool
    }

    /// The table prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The database file (canonical path), or `:memory: (...)`.
    pub fn file(&self) -> &str {
        &self.inner.file
    }

    /// A builder for a transactional target on this same database (finish
    /// it with `build().await`): its changes commit in one transaction
    /// together with their APPLIED entry (shared-transaction strategy), so no
    /// crash ever needs an operator.
    pub fn shared_target(&self, id: impl Into<String>) -> SqliteTargetBuilder {
        SqliteTarget::shared(id.into(), self.clone())
    }

    /// The statements that create this store's tables and its lock table,
    /// for databases where tables are created by hand (`auto_create(false)`).
    pub fn ddl(&self) -> String {
        let lock = schema::lock_table(&self.inner.prefix);
        self.inner
            .tables
            .iter()
            .chain(std::iter::once(&lock))
            .flat_map(|t| t.ddl.iter())
            .map(|d| format!("{d};\n"))
            .collect()
    }

    /// The store's own lock (table `<prefix>_lock` in the same file).
    pub fn lock(&self) -> SqliteLock {
        self.inner.lock.clone()
    }
}

impl StoreInner {
    pub(crate) fn describe(&self) -> String {
        self.describe.clone()
    }

    fn backend(&self, operation: &'static str, e: sqlx::Error) -> StoreError {
        if let Some(table) = missing_table(&e) {
            return StoreError::NotReady {
                store: self.describe(),
                detail: format!(
                    "table {table} does not exist: let the runner prepare the store (auto_create), \
                     or create it ({operation} failed: {e})"
                ),
            };
        }
        StoreError::Backend {
            store: self.describe(),
            operation,
            source: Box::new(e),
        }
    }

    fn malformed(&self, what: String, detail: impl Into<String>) -> StoreError {
        StoreError::Malformed {
            store: self.describe(),
            what,
            detail: detail.into(),
        }
    }

    /// Whether `e`, from a read before this handle prepared the store, means
    /// "our tables do not exist yet": such a read answers "nothing here".
    fn absent(&self, e: &sqlx::Error) -> bool {
        !self.prepared.load(Ordering::Acquire) && missing_table(e).is_some()
    }

    /// Before `prepare`: the database file does not exist, so there is
    /// nothing to read (and reading would create it).
    fn no_file_yet(&self) -> bool {
        !self.prepared.load(Ordering::Acquire) && connect::file_missing(&self.pool)
    }

    fn history_table(&self) -> &str {
        &self.tables[0].name
    }

    /// Fence check, history row and current-state row, on `conn`, which must
    /// be inside a `BEGIN IMMEDIATE` transaction (the store's own, or the
    /// change's in the shared-transaction strategy).
    pub(crate) async fn append_in(
        &self,
        conn: &mut SqliteConnection,
        entry: &AuditEntry,
    ) -> Result<(), StoreError> {
        let fence = self.read_fence(conn).await?;
        if entry.fencing_token < fence {
            return Err(StoreError::Fenced {
                store: self.describe(),
                token: entry.fencing_token,
                fence,
            });
        }
        let token = self.int("fencing token", entry.fencing_token)?;
        let duration = self.int("duration_ms", entry.duration_ms)?;
        let last: Option<String> = q(&self.sql.last_created)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| self.backend("read the last history row", e))?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(|e| self.backend("read the last history row", e))?;
        let last = match last {
            Some(s) => Some(parse_ts(&s).ok_or_else(|| {
                self.malformed(
                    format!("{}: last row", self.history_table()),
                    format!("created_at '{s}' is not an RFC 3339 timestamp"),
                )
            })?),
            None => None,
        };
        let created_at = stamp(last);
        let error = entry
            .error
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| self.encode_error(e))?;
        let metadata = serde_json::to_string(&entry.metadata).map_err(|e| self.encode_error(e))?;
        let row = q(&self.sql.insert)
            .bind(&entry.run_id)
            .bind(&entry.stage_id)
            .bind(&entry.change_id)
            .bind(&entry.author)
            .bind(&entry.order)
            .bind(&entry.target_system)
            .bind(entry.state.as_str())
            .bind(fmt_ts(created_at))
            .bind(duration)
            .bind(&entry.hostname)
            .bind(&entry.runner_id)
            .bind(error)
            .bind(metadata)
            .bind(entry.tx_strategy.as_str())
            .bind(entry.recovery.as_str())
            .bind(entry.transactional)
            .bind(token)
            .bind(&entry.checksum)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| self.backend("insert the history row", e))?;
        let id: i64 = row
            .try_get(0)
            .map_err(|e| self.backend("insert the history row", e))?;

        let current = q(&self.sql.current_of)
            .bind(&entry.change_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| self.backend("read the current state", e))?;
        // What the current row held before, for the summary: (state, checksum).
        let mut before: Option<(AuditState, Option<String>)> = None;
        let replace = match current {
            None => true,
            Some(row) => {
                let what = || {
                    format!(
                        "{} row of change '{}'",
                        self.tables[1].name, entry.change_id
                    )
                };
                let ts: String = row
                    .try_get(0)
                    .map_err(|e| self.malformed(what(), e.to_string()))?;
                let st: String = row
                    .try_get(1)
                    .map_err(|e| self.malformed(what(), e.to_string()))?;
                let ts = parse_ts(&ts).ok_or_else(|| {
                    self.malformed(what(), format!("created_at '{ts}' is not a timestamp"))
                })?;
                let st =
                    AuditState::from_str(&st).map_err(|e| self.malformed(what(), e.to_string()))?;
                let checksum: Option<String> = row
                    .try_get(2)
                    .map_err(|e| self.malformed(what(), e.to_string()))?;
                before = Some((st, checksum));
                (created_at, entry.state.rank()) > (ts, st.rank())
            }
        };
        if replace {
            q(&self.sql.current_set)
                .bind(&entry.change_id)
                .bind(id)
                .execute(&mut *conn)
                .await
                .map_err(|e| self.backend("update the current state", e))?;
            let applied = |state: AuditState| i64::from(summary::counts_as_applied(state));
            let (rows, applied_delta, old_term) = match &before {
                None => (1, applied(entry.state), 0),
                Some((st, checksum)) => (
                    0,
                    applied(entry.state) - applied(*st),
                    if summary::counts_as_applied(*st) {
                        summary::term(&entry.change_id, checksum.as_deref())
                    } else {
                        0
                    },
                ),
            };
            q(&self.sql.summary_move)
                .bind(rows)
                .bind(applied_delta)
                .bind(old_term ^ summary::applied_term(entry))
                .execute(&mut *conn)
                .await
                .map_err(|e| self.backend("update the summary", e))?;
        }
        Ok(())
    }

    async fn read_fence(&self, conn: &mut SqliteConnection) -> Result<u64, StoreError> {
        let row = q(&self.sql.fence_get)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| self.backend("read the fence", e))?;
        self.fence_of(row)
    }

    fn fence_of(&self, row: Option<SqliteRow>) -> Result<u64, StoreError> {
        let Some(row) = row else { return Ok(0) };
        let what = || format!("{} row", self.tables[2].name);
        let token: i64 = row
            .try_get(0)
            .map_err(|e| self.malformed(what(), e.to_string()))?;
        u64::try_from(token).map_err(|_| self.malformed(what(), format!("negative token {token}")))
    }

    fn int(&self, what: &str, v: u64) -> Result<i64, StoreError> {
        i64::try_from(v).map_err(|_| StoreError::Backend {
            store: self.describe(),
            operation: "append",
            source: format!("{what} {v} exceeds SQLite's 64-bit signed integer range").into(),
        })
    }

    fn encode_error(&self, e: serde_json::Error) -> StoreError {
        StoreError::Backend {
            store: self.describe(),
            operation: "encode the entry as JSON",
            source: Box::new(e),
        }
    }

    fn entry_from_row(&self, table: &str, row: &SqliteRow) -> Result<AuditEntry, StoreError> {
        let id: i64 = row.try_get("id").unwrap_or(-1);
        let change_id: Option<String> = row.try_get("change_id").ok();
        let what = || match &change_id {
            Some(c) => format!("{table} row {id} (change '{c}')"),
            None => format!("{table} row {id}"),
        };
        let bad = |detail: String| self.malformed(what(), detail);
        let text = |col: &str| -> Result<String, StoreError> {
            row.try_get::<String, _>(col)
                .map_err(|e| bad(format!("column {col}: {e}")))
        };
        let opt_text = |col: &str| -> Result<Option<String>, StoreError> {
            row.try_get::<Option<String>, _>(col)
                .map_err(|e| bad(format!("column {col}: {e}")))
        };
        let int = |col: &str| -> Result<i64, StoreError> {
            row.try_get::<i64, _>(col)
                .map_err(|e| bad(format!("column {col}: {e}")))
        };
        let unsigned = |col: &str| -> Result<u64, StoreError> {
            let v = int(col)?;
            u64::try_from(v).map_err(|_| bad(format!("column {col}: negative value {v}")))
        };
        let Some(change_id_v) = change_id.clone() else {
            return Err(bad("column change_id: missing or not text".into()));
        };
        let state_s = text("state")?;
        let state = AuditState::from_str(&state_s).map_err(|e| bad(e.to_string()))?;
        let mut e = AuditEntry::new(change_id_v, state, unsigned("fencing_token")?);
        e.run_id = text("run_id")?;
        e.stage_id = text("stage_id")?;
        e.author = text("author")?;
        e.order = text("change_order")?;
        e.target_system = text("target_system")?;
        let ts = text("created_at")?;
        e.created_at = parse_ts(&ts)
            .ok_or_else(|| bad(format!("created_at '{ts}' is not an RFC 3339 timestamp")))?;
        e.duration_ms = unsigned("duration_ms")?;
        e.hostname = text("hostname")?;
        e.runner_id = text("runner_id")?;
        e.error = match opt_text("error")? {
            Some(s) => Some(
                serde_json::from_str::<ErrorInfo>(&s)
                    .map_err(|err| bad(format!("column error is not an error record: {err}")))?,
            ),
            None => None,
        };
        let meta = text("metadata")?;
        e.metadata = serde_json::from_str(&meta)
            .map_err(|err| bad(format!("column metadata is not JSON: {err}")))?;
        let tx = text("tx_strategy")?;
        e.tx_strategy =
            TxStrategy::from_str(&tx).map_err(|_| bad(format!("unknown tx_strategy '{tx}'")))?;
        let rec = text("recovery")?;
        e.recovery = RecoveryStrategy::from_str(&rec)
            .map_err(|_| bad(format!("unknown recovery strategy '{rec}'")))?;
        e.transactional = int("transactional")? != 0;
        e.checksum = opt_text("checksum")?;
        Ok(e)
    }

    /// A read found one of the store's tables missing: nothing to read,
    /// unless another of its tables exists with another shape (a foreign
    /// table under this prefix), which is reported instead of read as empty.
    /// Looks at the catalog only.
    async fn nothing_or_foreign(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let defs: Vec<&TableDef> = self.tables.iter().collect();
        match schema::ensure(&self.pool, &defs, false).await {
            Err(e @ EnsureError::WrongShape { .. }) => Err(self.ensure_error(e)),
            _ => Ok(Vec::new()),
        }
    }

    fn ensure_error(&self, e: EnsureError) -> StoreError {
        match e {
            EnsureError::NotReady(table) => StoreError::NotReady {
                store: self.describe(),
                detail: format!(
                    "table {table} does not exist in {} and auto_create is off: create the \
                     tables or build the store with auto_create(true)",
                    self.file
                ),
            },
            EnsureError::WrongShape { table, missing } => self.malformed(
                format!("table {table}"),
                format!(
                    "it exists without the column(s) {}: it was not created by this version of \
                     Flamingock; rename it or choose another table prefix",
                    missing.join(", ")
                ),
            ),
            EnsureError::Db(e) => self.backend("prepare the tables", e),
        }
    }
}

/// The table name in a "no such table: X" error, if that is what `e` is.
pub(crate) fn missing_table(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db
            .message()
            .strip_prefix("no such table: ")
            .map(str::to_owned),
        _ => None,
    }
}

/// Timestamps are stored as fixed-width RFC 3339 text in UTC with
/// microseconds: readable with the `sqlite3` shell and ordered as text.
pub(crate) fn fmt_ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

pub(crate) fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// The smallest stored timestamp at or after `t` (stored values have microseconds).
fn ceil_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    let m = micros(t);
    if m < t {
        m + chrono::Duration::microseconds(1)
    } else {
        m
    }
}

static LAST_STAMP: Mutex<Option<DateTime<Utc>>> = Mutex::new(None);

/// The store's clock: now, at microsecond precision, strictly after every
/// stamp of this process and after `after` (the file's last history row, so
/// the history of a file shared by several processes stays ordered too).
fn stamp(after: Option<DateTime<Utc>>) -> DateTime<Utc> {
    let mut last = LAST_STAMP.lock().unwrap_or_else(|p| p.into_inner());
    let mut t = micros(Utc::now());
    for prev in [*last, after].into_iter().flatten() {
        if t <= prev {
            t = prev + chrono::Duration::microseconds(1);
        }
    }
    *last = Some(t);
    t
}

#[async_trait]
impl AuditStore for SqliteAuditStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn store_id(&self) -> &str {
        &self.inner.id
    }

    async fn prepare(&self) -> Result<(), StoreError> {
        let i = &self.inner;
        if !i.auto_create && i.no_file_yet() {
            // Switching to WAL would create the file: with auto_create off
            // nothing is created, not even an empty database.
            return Err(StoreError::NotReady {
                store: i.describe(),
                detail: format!(
                    "the database file {} does not exist (so neither does table {}) and \
                     auto_create is off: create the tables (ddl()) or build the store with \
                     auto_create(true)",
                    i.file,
                    i.history_table()
                ),
            });
        }
        connect::ensure_wal(&i.pool, i.busy_timeout)
            .await
            .map_err(|e| StoreError::Backend {
                store: i.describe(),
                operation: "open the database",
                source: Box::new(e),
            })?;
        let defs: Vec<&TableDef> = i.tables.iter().collect();
        schema::ensure(&i.pool, &defs, i.auto_create)
            .await
            .map_err(|e| i.ensure_error(e))?;
        i.prepared.store(true, Ordering::Release);
        Ok(())
    }

    async fn claim_fence(&self) -> Result<u64, StoreError> {
        let i = &self.inner;
        let mut tx = i
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| i.backend("begin a write transaction", e))?;
        let epoch = i.read_fence(&mut tx).await?.saturating_add(1);
        q(&i.sql.fence_set)
            .bind(i.int("epoch", epoch)?)
            .execute(&mut *tx)
            .await
            .map_err(|e| i.backend("claim the fence", e))?;
        tx.commit()
            .await
            .map_err(|e| i.backend("commit the fence", e))?;
        Ok(epoch)
    }

    async fn fence(&self) -> Result<u64, StoreError> {
        let i = &self.inner;
        if i.no_file_yet() {
            return Ok(0);
        }
        let mut conn = i
            .pool
            .acquire()
            .await
            .map_err(|e| i.backend("acquire a connection", e))?;
        match q(&i.sql.fence_get).fetch_optional(&mut *conn).await {
            Err(e) if i.absent(&e) => Ok(0),
            r => i.fence_of(r.map_err(|e| i.backend("read the fence", e))?),
        }
    }

    async fn append(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let i = &self.inner;
        let mut tx = i
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| i.backend("begin a write transaction", e))?;
        match i.append_in(&mut tx, entry).await {
            Ok(()) => tx
                .commit()
                .await
                .map_err(|e| i.backend("commit the audit entry", e)),
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    async fn summary(&self) -> Result<Option<summary::AuditSummary>, StoreError> {
        let i = &self.inner;
        if i.no_file_yet() {
            return Ok(None);
        }
        let row: Option<(Option<i64>, Option<i64>, Option<i64>)> =
            match sqlx::query_as(sqlx::AssertSqlSafe(i.sql.summary_get.clone()))
                .fetch_optional(&i.pool)
                .await
            {
                Err(e) if i.absent(&e) => return Ok(None),
                // A fence table made before the summary existed: read the
                // snapshot; prepare reports the table's shape.
                Err(e) if e.to_string().contains("no such column") => return Ok(None),
                r => r.map_err(|e| i.backend("read the summary", e))?,
            };
        Ok(row.and_then(|(rows, applied, digest)| {
            summary::AuditSummary::from_stored(rows, applied, digest)
        }))
    }

    async fn snapshot(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let i = &self.inner;
        if i.no_file_yet() {
            return Ok(Vec::new());
        }
        let rows = match q(&i.sql.snapshot).fetch_all(&i.pool).await {
            Err(e) if i.absent(&e) => return i.nothing_or_foreign().await,
            r => r.map_err(|e| i.backend("read the snapshot", e))?,
        };
        rows.iter()
            .map(|r| i.entry_from_row(i.history_table(), r))
            .collect()
    }

    async fn history(&self, filter: &HistoryFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let i = &self.inner;
        if i.no_file_yet() {
            return Ok(Vec::new());
        }
        let which =
            usize::from(filter.change_id.is_some()) + 2 * usize::from(filter.since.is_some());
        let mut query = q(&i.sql.history[which]);
        if let Some(c) = &filter.change_id {
            query = query.bind(c.clone());
        }
        if let Some(since) = filter.since {
            query = query.bind(fmt_ts(ceil_micros(since)));
        }
        let rows = match query.fetch_all(&i.pool).await {
            Err(e) if i.absent(&e) => return i.nothing_or_foreign().await,
            r => r.map_err(|e| i.backend("read the history", e))?,
        };
        rows.iter()
            .map(|r| i.entry_from_row(i.history_table(), r))
            .collect()
    }

    fn default_lock(&self) -> Option<Arc<dyn LockProvider>> {
        Some(Arc::new(self.inner.lock.clone()))
    }
}

/// The shared-transaction write: the same fence check, history row and
/// current-state row as [`AuditStore::append`], on the connection of the
/// change's `BEGIN IMMEDIATE` transaction.
impl flamingock_core::AppendInTransaction for SqliteAuditStore {
    type Transaction = SqliteConnection;

    async fn append_in_transaction(
        &self,
        tx: &mut SqliteConnection,
        entry: &AuditEntry,
    ) -> Result<(), StoreError> {
        self.inner.append_in(tx, entry).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_roundtrip_and_sort_as_text() {
        let a = micros(Utc::now());
        let b = a + chrono::Duration::microseconds(1);
        assert_eq!(parse_ts(&fmt_ts(a)), Some(a));
        assert!(fmt_ts(a) < fmt_ts(b));
    }

    #[test]
    fn stamps_strictly_increase() {
        let far = Utc::now() + chrono::Duration::seconds(5);
        let s1 = stamp(Some(far));
        let s2 = stamp(None);
        assert!(s1 > far && s2 > s1);
    }
}
