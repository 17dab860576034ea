//! The fenced lease lock in a table of the database file.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use flamingock_core::{async_trait, Acquire, Lease, LockError, LockInfo, LockProvider};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection, SqlitePool};
use tokio::sync::OnceCell;

use crate::connect::{self, PoolSettings};
use crate::schema::{self, ident, q, EnsureError, Shape, TableDef};
use crate::source::{Source, SqliteSource};
use crate::store::DEFAULT_PREFIX;

/// A [`LockProvider`] in table `<prefix>_lock` of a SQLite database.
///
/// One row holds the current owner, its token, its expiry (unix
/// milliseconds of the process clock: every process on one machine shares
/// it) and a token counter that survives releases and expiries. Acquisition
/// is one `BEGIN IMMEDIATE` transaction: read, decide, write, commit; the
/// write lock taken up front makes it atomic across processes. `extend` and
/// `release` are single conditional `UPDATE`s on owner and token.
///
/// The table is created on first use (unless built with `auto_create(false)`).
/// Clones share the same pool.
///
/// ```no_run
/// use flamingock_sqlite::SqliteLock;
/// # async fn demo() -> Result<(), flamingock_core::LockError> {
/// let lock = SqliteLock::builder("app.db").prefix("ops").build().await?;
/// # let _ = lock;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteLock {
    inner: Arc<LockInner>,
}

struct LockInner {
    pool: SqlitePool,
    describe: String,
    table: TableDef,
    auto_create: bool,
    /// How long the switch to WAL may wait for other connections.
    busy_timeout: Duration,
    ready: OnceCell<()>,
    sql: LockSql,
}

struct LockSql {
    get: Arc<str>,
    grant: Arc<str>,
    extend: Arc<str>,
    release: Arc<str>,
    clear: Arc<str>,
}

impl std::fmt::Debug for SqliteLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteLock")
            .field("lock", &self.inner.describe)
            .finish_non_exhaustive()
    }
}

/// Configures a standalone [`SqliteLock`].
#[derive(Debug)]
#[must_use]
pub struct SqliteLockBuilder {
    source: Source,
    prefix: String,
    auto_create: bool,
}

impl SqliteLockBuilder {
    /// Table prefix (default `flamingock`): the table is `<prefix>_lock`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Whether the first operation creates the table when missing (default `true`).
    pub fn auto_create(mut self, yes: bool) -> Self {
        self.auto_create = yes;
        self
    }

    /// Opens the database (a pool; a file is created by the first write).
    pub async fn build(self) -> Result<SqliteLock, LockError> {
        if let Err(e) =
            flamingock_core::names::plain_identifier("table prefix", &self.prefix, &[], 100)
        {
            return Err(LockError::InvalidConfig {
                lock: format!("sqlite(table {}_lock)", self.prefix.escape_debug()),
                detail: e.to_string(),
            });
        }
        let pool = match self.source {
            Source::Pool(p) => p,
            Source::Location(loc) => connect::open_pool(&loc, PoolSettings::default())
                .await
                .map_err(|e| LockError::Backend {
                    lock: format!(
                        "sqlite({}, table {}_lock)",
                        connect::display_location(&loc),
                        self.prefix
                    ),
                    operation: "open the database",
                    source: Box::new(e),
                })?,
        };
        let who = connect::identity(&pool);
        Ok(SqliteLock::internal(
            pool,
            &self.prefix,
            &who.display,
            self.auto_create,
            connect::DEFAULT_BUSY_TIMEOUT,
        ))
    }
}

impl SqliteLock {
    /// A builder for a standalone lock in the database at `source` (a path, a
    /// `sqlite:` URL or a pool; see [`SqliteSource`]). An audit store's own
    /// lock comes from [`SqliteAuditStore::lock`](crate::SqliteAuditStore::lock).
    pub fn builder(source: impl Into<SqliteSource>) -> SqliteLockBuilder {
        SqliteLockBuilder {
            source: source.into().0,
            prefix: DEFAULT_PREFIX.to_owned(),
            auto_create: true,
        }
    }

    pub(crate) fn internal(
        pool: SqlitePool,
        prefix: &str,
        file: &str,
        auto_create: bool,
        busy_timeout: Duration,
    ) -> Self {
        let table = schema::lock_table(prefix);
        let t = ident(&table.name);
        let s = |x: String| -> Arc<str> { x.into() };
        SqliteLock {
            inner: Arc::new(LockInner {
                describe: format!("sqlite({file}, table {})", table.name),
                sql: LockSql {
                    get: s(format!(
                        "SELECT owner, token, expires_at_ms, counter FROM {t} WHERE id = 1"
                    )),
                    grant: s(format!(
                        "INSERT INTO {t} (id, owner, token, expires_at_ms, counter) VALUES (1, ?1, ?2, ?3, ?2) \
                         ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, token = excluded.token, \
                         expires_at_ms = excluded.expires_at_ms, counter = excluded.counter"
                    )),
                    extend: s(format!(
                        "UPDATE {t} SET expires_at_ms = ?3 WHERE id = 1 AND owner = ?1 AND token = ?2"
                    )),
                    release: s(format!(
                        "UPDATE {t} SET owner = NULL, token = NULL, expires_at_ms = NULL \
                         WHERE id = 1 AND owner = ?1 AND token = ?2"
                    )),
                    clear: s(format!(
                        "UPDATE {t} SET owner = NULL, token = NULL, expires_at_ms = NULL WHERE id = 1"
                    )),
                },
                table,
                auto_create,
                busy_timeout,
                ready: OnceCell::new(),
                pool,
            }),
        }
    }
}

/// A row of the lock table.
struct LockRow {
    holder: Option<(String, u64, i64)>,
    counter: u64,
}

impl LockInner {
    fn backend(&self, operation: &'static str, e: sqlx::Error) -> LockError {
        LockError::Backend {
            lock: self.describe.clone(),
            operation,
            source: Box::new(e),
        }
    }

    fn malformed(&self, detail: impl Into<String>) -> LockError {
        LockError::Malformed {
            lock: self.describe.clone(),
            detail: detail.into(),
        }
    }

    fn lost(&self, owner: &str, token: u64) -> LockError {
        LockError::Lost {
            lock: self.describe.clone(),
            owner: owner.to_owned(),
            token,
        }
    }

    async fn ready(&self) -> Result<(), LockError> {
        self.ready
            .get_or_try_init(|| async {
                connect::ensure_wal(&self.pool, self.busy_timeout)
                    .await
                    .map_err(|e| LockError::Backend {
                        lock: self.describe.clone(),
                        operation: "open the database",
                        source: Box::new(e),
                    })?;
                schema::ensure(&self.pool, &[&self.table], self.auto_create)
                    .await
                    .map_err(|e| match e {
                        EnsureError::NotReady(t) => LockError::Backend {
                            lock: self.describe.clone(),
                            operation: "check the lock table",
                            source: format!("table {t} does not exist and auto_create is off")
                                .into(),
                        },
                        EnsureError::WrongShape { table, missing } => self.malformed(format!(
                            "table {table} exists without the column(s) {}",
                            missing.join(", ")
                        )),
                        EnsureError::Db(e) => self.backend("prepare the lock table", e),
                    })
            })
            .await
            .map(|_| ())
    }

    /// What `try_acquire` reports when the write lock of the file stayed
    /// taken: the recorded holder if there is one (reads do not wait in WAL
    /// mode), else the busy file itself.
    async fn held_by_writer(&self, busy: sqlx::Error) -> Result<Acquire, LockError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| self.backend("acquire a connection", e))?;
        let row = self.read(&mut conn).await?;
        let now = now_ms();
        let counter = row.as_ref().map_or(0, |r| r.counter);
        Ok(Acquire::Held(match row.and_then(|r| r.holder) {
            Some(h) if h.2 > now => info(h, now),
            _ => LockInfo::new(
                format!("(a transaction holding the database's write lock: {busy})"),
                counter,
                at(now),
                false,
            ),
        }))
    }

    async fn read(&self, conn: &mut SqliteConnection) -> Result<Option<LockRow>, LockError> {
        let row = match q(&self.sql.get).fetch_optional(&mut *conn).await {
            // Before this handle made the table ready, a failed read is
            // explained by a read-only look at the table: none means that
            // nobody ever took the lock here; another shape is reported.
            Err(e) if self.ready.get().is_none() => {
                match schema::check_shape(&mut *conn, &self.table).await {
                    Ok(Shape::Missing) => None,
                    Ok(Shape::WrongColumns(missing)) => {
                        return Err(self.malformed(format!(
                            "table {} exists without the column(s) {}",
                            self.table.name,
                            missing.join(", ")
                        )))
                    }
                    _ => return Err(self.backend("read the lock", e)),
                }
            }
            r => r.map_err(|e| self.backend("read the lock", e))?,
        };
        row.map(|r| self.parse(&r)).transpose()
    }

    fn parse(&self, r: &SqliteRow) -> Result<LockRow, LockError> {
        let col = |e: sqlx::Error| self.malformed(e.to_string());
        let owner: Option<String> = r.try_get("owner").map_err(col)?;
        let token: Option<i64> = r.try_get("token").map_err(col)?;
        let expires: Option<i64> = r.try_get("expires_at_ms").map_err(col)?;
        let counter: i64 = r.try_get("counter").map_err(col)?;
        let counter = u64::try_from(counter)
            .map_err(|_| self.malformed(format!("negative token counter {counter}")))?;
        let holder = match (owner, token, expires) {
            (None, None, None) => None,
            (Some(o), Some(t), Some(x)) => {
                let t = u64::try_from(t)
                    .map_err(|_| self.malformed(format!("negative token {t}")))?;
                Some((o, t, x))
            }
            (o, t, x) => {
                return Err(self.malformed(format!(
                    "owner, token and expires_at_ms must be all set or all NULL, found owner={o:?} token={t:?} expires_at_ms={x:?}"
                )))
            }
        };
        Ok(LockRow { holder, counter })
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2)
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn info((owner, token, expires): (String, u64, i64), now: i64) -> LockInfo {
    LockInfo::new(owner, token, at(expires), expires <= now)
}

#[async_trait]
impl LockProvider for SqliteLock {
    fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    async fn try_acquire(&self, owner: &str, lease: Duration) -> Result<Acquire, LockError> {
        let i = &self.inner;
        i.ready().await?;
        let mut tx = match i.pool.begin_with("BEGIN IMMEDIATE").await {
            Ok(tx) => tx,
            // Another connection kept the file's write lock for the whole
            // busy timeout (typically a long change in its transaction):
            // the lock is not ours now; the runner waits and retries.
            Err(e) if connect::is_busy(&e) => return i.held_by_writer(e).await,
            Err(e) => return Err(i.backend("begin a write transaction", e)),
        };
        let row = i.read(&mut tx).await?;
        let now = now_ms();
        let counter = row.as_ref().map_or(0, |r| r.counter);
        if let Some((o, t, x)) = row.and_then(|r| r.holder) {
            if o != owner && x > now {
                let _ = tx.rollback().await;
                return Ok(Acquire::Held(info((o, t, x), now)));
            }
        }
        let token = counter + 1;
        let token_i = i64::try_from(token)
            .map_err(|_| i.malformed(format!("token counter {counter} is at its maximum")))?;
        let expires = now.saturating_add(lease_ms(lease));
        q(&i.sql.grant)
            .bind(owner)
            .bind(token_i)
            .bind(expires)
            .execute(&mut *tx)
            .await
            .map_err(|e| i.backend("write the lock", e))?;
        tx.commit()
            .await
            .map_err(|e| i.backend("commit the lock", e))?;
        Ok(Acquire::Acquired(Lease::new(token, at(expires))))
    }

    async fn extend(&self, owner: &str, token: u64, lease: Duration) -> Result<Lease, LockError> {
        let i = &self.inner;
        i.ready().await?;
        let Ok(token_i) = i64::try_from(token) else {
            return Err(i.lost(owner, token));
        };
        let expires = now_ms().saturating_add(lease_ms(lease));
        // A single conditional UPDATE in autocommit takes the write lock
        // before it reads, so it cannot hit a stale-snapshot upgrade.
        let done = q(&i.sql.extend)
            .bind(owner)
            .bind(token_i)
            .bind(expires)
            .execute(&i.pool)
            .await
            .map_err(|e| i.backend("extend the lease", e))?;
        if done.rows_affected() == 1 {
            Ok(Lease::new(token, at(expires)))
        } else {
            Err(i.lost(owner, token))
        }
    }

    async fn release(&self, owner: &str, token: u64) -> Result<(), LockError> {
        let i = &self.inner;
        i.ready().await?;
        let Ok(token_i) = i64::try_from(token) else {
            return Err(i.lost(owner, token));
        };
        let done = q(&i.sql.release)
            .bind(owner)
            .bind(token_i)
            .execute(&i.pool)
            .await
            .map_err(|e| i.backend("release the lock", e))?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(i.lost(owner, token))
        }
    }

    async fn inspect(&self) -> Result<Option<LockInfo>, LockError> {
        let i = &self.inner;
        // Looking never writes: no table (or no file) means nobody holds it.
        if i.ready.get().is_none() && connect::file_missing(&i.pool) {
            return Ok(None);
        }
        let mut conn = i
            .pool
            .acquire()
            .await
            .map_err(|e| i.backend("acquire a connection", e))?;
        let row = i.read(&mut conn).await?;
        Ok(row.and_then(|r| r.holder).map(|h| info(h, now_ms())))
    }

    async fn force_release(&self) -> Result<Option<LockInfo>, LockError> {
        let i = &self.inner;
        if i.ready.get().is_none() {
            // Nothing to remove where the lock table does not exist; never create it.
            let mut conn = match connect::file_missing(&i.pool) {
                true => return Ok(None),
                false => i
                    .pool
                    .acquire()
                    .await
                    .map_err(|e| i.backend("acquire a connection", e))?,
            };
            if i.read(&mut conn).await?.is_none() {
                return Ok(None);
            }
        }
        let mut tx = i
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| i.backend("begin a write transaction", e))?;
        let row = i.read(&mut tx).await?;
        q(&i.sql.clear)
            .execute(&mut *tx)
            .await
            .map_err(|e| i.backend("clear the lock", e))?;
        tx.commit()
            .await
            .map_err(|e| i.backend("commit the lock", e))?;
        Ok(row.and_then(|r| r.holder).map(|h| info(h, now_ms())))
    }
}
