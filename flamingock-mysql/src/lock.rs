//! The fenced lease lock, as one row of a `<prefix>_lock` table.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use flamingock_core::{async_trait, Acquire, Lease, LockError, LockInfo, LockProvider};
use sqlx::mysql::MySqlRow;
use sqlx::{AssertSqlSafe, MySqlPool, Row};

use crate::db_error::boxed;
use crate::names::{Names, Table};
use crate::schema::{SchemaError, LOCK_NAME};
use crate::space::{idempotent, Space};
use crate::store::DEFAULT_PREFIX;

#[derive(Debug)]
struct Statements {
    lock_row: String,
    insert: String,
    grant: String,
    extend: String,
    holder: String,
    release: String,
    free: String,
}

impl Statements {
    fn new(n: &Names) -> Self {
        let t = n.qualified(Table::Lock);
        Statements {
            lock_row: format!(
                "SELECT owner, token, expires_at, expires_at <= UTC_TIMESTAMP(6), UTC_TIMESTAMP(6)
                   FROM {t} WHERE name = ? FOR UPDATE"
            ),
            insert: format!("INSERT INTO {t} (name, owner, token, expires_at) VALUES (?, ?, 1, ?)"),
            grant: format!("UPDATE {t} SET owner = ?, token = ?, expires_at = ? WHERE name = ?"),
            extend: format!("UPDATE {t} SET expires_at = ? WHERE name = ?"),
            holder: format!(
                "SELECT owner, token, expires_at, expires_at <= UTC_TIMESTAMP(6)
                   FROM {t} WHERE name = ? AND owner IS NOT NULL"
            ),
            // The row stays (with its token): only the owner goes.
            release: format!(
                "UPDATE {t} SET owner = NULL WHERE name = ? AND owner = ? AND token = ?"
            ),
            free: format!("UPDATE {t} SET owner = NULL WHERE name = ?"),
        }
    }
}

/// The MySQL / MariaDB [`LockProvider`]: one row of `<database>.<prefix>_lock`.
///
/// Each operation is one short transaction that locks the row (`SELECT ...
/// FOR UPDATE`), decides by the **server's** clock (`UTC_TIMESTAMP(6)`) and
/// writes. The token counter lives in the row and survives releases, so
/// every grant gets a higher token. No `GET_LOCK`: a named lock belongs to
/// a connection, and a pooled connection that outlives (or dies before) the
/// runner would hold it wrongly (or drop it silently).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use flamingock_mysql::MysqlLock;
/// let pool = sqlx::MySqlPool::connect_lazy("mysql://app@db/app")?;
/// let lock = MysqlLock::builder(pool).prefix("ops").build().await?;
/// # let _ = lock; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct MysqlLock {
    space: Arc<Space>,
    sql: Arc<Statements>,
    describe: String,
}

/// Configures a standalone [`MysqlLock`] (the audit store's own comes from
/// [`MysqlAuditStore::lock`](crate::MysqlAuditStore::lock)).
#[derive(Debug, Clone)]
#[must_use]
pub struct MysqlLockBuilder {
    pool: MySqlPool,
    database: Option<String>,
    prefix: String,
    auto_create: bool,
}

impl MysqlLockBuilder {
    /// Database of the lock table (default: the pool's).
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.database = Some(database.into());
        self
    }
    /// Table prefix (default `flamingock`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
    /// Whether the first operation creates the table when missing (default `true`).
    pub fn auto_create(mut self, yes: bool) -> Self {
        self.auto_create = yes;
        self
    }
    /// Validates the names. Does no I/O.
    ///
    /// # Errors
    /// [`LockError::Malformed`] naming an invalid database or prefix, or a
    /// missing database.
    pub async fn build(self) -> Result<MysqlLock, LockError> {
        let options = self.pool.connect_options();
        let database = self
            .database
            .clone()
            .or_else(|| options.get_database().map(str::to_owned))
            .unwrap_or_default();
        let names =
            Names::new(&database, &self.prefix).map_err(|detail| LockError::InvalidConfig {
                lock: format!("mysql({database}.{}_lock)", self.prefix),
                detail: match database.is_empty() {
                    true => "no database: name it in the URL or with .database(..)".into(),
                    false => detail,
                },
            })?;
        Ok(MysqlLock::from_space(Arc::new(Space::new(
            self.pool,
            names,
            self.auto_create,
            vec![Table::Lock],
        ))))
    }
}

fn micros(lease: Duration) -> chrono::Duration {
    chrono::Duration::microseconds(i64::try_from(lease.as_micros()).unwrap_or(i64::MAX / 2))
}

/// What the lock row holds.
struct LockRow {
    owner: Option<String>,
    token: i64,
    expires_at: NaiveDateTime,
    expired: bool,
    now: NaiveDateTime,
}

impl MysqlLock {
    /// A builder for a lock on `pool`.
    pub fn builder(pool: MySqlPool) -> MysqlLockBuilder {
        MysqlLockBuilder {
            pool,
            database: None,
            prefix: DEFAULT_PREFIX.to_owned(),
            auto_create: true,
        }
    }

    pub(crate) fn from_space(space: Arc<Space>) -> Self {
        MysqlLock {
            sql: Arc::new(Statements::new(&space.names)),
            describe: format!("mysql({})", space.names.display(Table::Lock)),
            space,
        }
    }

    fn backend(&self, operation: &'static str, source: sqlx::Error) -> LockError {
        LockError::Backend {
            lock: self.describe.clone(),
            operation,
            source: boxed(source),
        }
    }

    fn malformed(&self, detail: String) -> LockError {
        LockError::Malformed {
            lock: self.describe.clone(),
            detail,
        }
    }

    fn lost(&self, owner: &str, token: u64) -> LockError {
        LockError::Lost {
            lock: self.describe.clone(),
            owner: owner.to_owned(),
            token,
        }
    }

    fn token(&self, t: i64) -> Result<u64, LockError> {
        u64::try_from(t).map_err(|_| self.malformed(format!("negative token {t}")))
    }

    async fn ready(&self) -> Result<(), LockError> {
        self.space.ready().await.map_err(|e| match e {
            SchemaError::Db { operation, source } => self.backend(operation, source),
            SchemaError::Missing { detail, .. } => self.malformed(detail),
            SchemaError::WrongShape { table, detail } => {
                self.malformed(format!("table {table}: {detail}"))
            }
        })
    }

    fn decode(&self, r: &MySqlRow, with_now: bool) -> Result<LockRow, LockError> {
        let bad = |e: sqlx::Error| self.malformed(e.to_string());
        let expires_at: NaiveDateTime = r.try_get(2).map_err(bad)?;
        Ok(LockRow {
            owner: r.try_get(0).map_err(bad)?,
            token: r.try_get(1).map_err(bad)?,
            expires_at,
            expired: r.try_get::<i64, _>(3).map_err(bad)? != 0,
            now: if with_now {
                r.try_get(4).map_err(bad)?
            } else {
                expires_at
            },
        })
    }

    fn info(&self, row: LockRow) -> Result<Option<LockInfo>, LockError> {
        let Some(owner) = row.owner else {
            return Ok(None);
        };
        Ok(Some(LockInfo::new(
            owner,
            self.token(row.token)?,
            utc(row.expires_at),
            row.expired,
        )))
    }

    async fn holder(&self) -> Result<Option<LockInfo>, LockError> {
        let row = match idempotent("inspect lock", || async {
            sqlx::query(AssertSqlSafe(self.sql.holder.as_str()))
                .bind(LOCK_NAME)
                .fetch_optional(&self.space.pool)
                .await
        })
        .await
        {
            // No lock table yet: nobody ever held the lock here.
            Err(e) if self.space.absent(&e) => None,
            r => r.map_err(|e| self.backend("inspect", e))?,
        };
        match row {
            Some(r) => {
                let row = self.decode(&r, false)?;
                self.info(row)
            }
            None => Ok(None),
        }
    }

    /// One acquisition attempt in one transaction: `Ok(Ok(lease))` granted,
    /// `Ok(Err(holder))` held by another.
    async fn attempt(
        &self,
        owner: &str,
        lease: Duration,
    ) -> Result<Result<(i64, NaiveDateTime), LockRow>, sqlx::Error> {
        let mut tx = self.space.pool.begin().await?;
        let row = sqlx::query(AssertSqlSafe(self.sql.lock_row.as_str()))
            .bind(LOCK_NAME)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            // The row was deleted by hand: make it again (a concurrent
            // insert fails on the key, and the caller tries again).
            let now: NaiveDateTime = sqlx::query_scalar("SELECT UTC_TIMESTAMP(6)")
                .fetch_one(&mut *tx)
                .await?;
            let expires = now + micros(lease);
            sqlx::query(AssertSqlSafe(self.sql.insert.as_str()))
                .bind(LOCK_NAME)
                .bind(owner)
                .bind(expires)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(Ok((1, expires)));
        };
        let row = match self.decode(&row, true) {
            Ok(r) => r,
            Err(e) => return Err(sqlx::Error::Decode(e.to_string().into())),
        };
        let free = row.owner.is_none() || row.expired || row.owner.as_deref() == Some(owner);
        if !free {
            tx.commit().await?;
            return Ok(Err(row));
        }
        let token = row.token.saturating_add(1);
        let expires = row.now + micros(lease);
        sqlx::query(AssertSqlSafe(self.sql.grant.as_str()))
            .bind(owner)
            .bind(token)
            .bind(expires)
            .bind(LOCK_NAME)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Ok((token, expires)))
    }
}

fn utc(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

#[async_trait]
impl LockProvider for MysqlLock {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn try_acquire(&self, owner: &str, lease: Duration) -> Result<Acquire, LockError> {
        self.ready().await?;
        // Retrying after a lost connection or a deadlock is safe: a grant
        // that did happen is ours, and acquiring our own lock again just
        // bumps the token. A duplicate key (the row made again by two
        // runners at once) is tried again too.
        let mut attempts = 0;
        let outcome = loop {
            attempts += 1;
            match idempotent("acquire lock", || self.attempt(owner, lease)).await {
                Err(e) if crate::db_error::error_number(&e) == Some(1062) && attempts < 5 => {
                    continue
                }
                r => break r,
            }
        }
        .map_err(|e| self.backend("acquire", e))?;
        match outcome {
            Ok((token, expires)) => Ok(Acquire::Acquired(Lease::new(
                self.token(token)?,
                utc(expires),
            ))),
            Err(held) => match self.info(held)? {
                Some(info) => Ok(Acquire::Held(info)),
                None => Err(self.malformed("the lock row changed while it was locked".into())),
            },
        }
    }

    async fn extend(&self, owner: &str, token: u64, lease: Duration) -> Result<Lease, LockError> {
        self.ready().await?;
        let Ok(t) = i64::try_from(token) else {
            return Err(self.lost(owner, token));
        };
        let extended = idempotent("extend lock", || async {
            let mut tx = self.space.pool.begin().await?;
            let row = sqlx::query(AssertSqlSafe(self.sql.lock_row.as_str()))
                .bind(LOCK_NAME)
                .fetch_optional(&mut *tx)
                .await?;
            let row = match row.map(|r| self.decode(&r, true)).transpose() {
                Ok(r) => r,
                Err(e) => return Err(sqlx::Error::Decode(e.to_string().into())),
            };
            let Some(row) = row.filter(|r| r.owner.as_deref() == Some(owner) && r.token == t)
            else {
                tx.commit().await?;
                return Ok(None);
            };
            let expires = row.now + micros(lease);
            sqlx::query(AssertSqlSafe(self.sql.extend.as_str()))
                .bind(expires)
                .bind(LOCK_NAME)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Some(expires))
        })
        .await
        .map_err(|e| self.backend("extend", e))?;
        match extended {
            Some(expires) => Ok(Lease::new(token, utc(expires))),
            None => Err(self.lost(owner, token)),
        }
    }

    async fn release(&self, owner: &str, token: u64) -> Result<(), LockError> {
        self.ready().await?;
        let Ok(t) = i64::try_from(token) else {
            return Err(self.lost(owner, token));
        };
        // The owner changes from ours to NULL, so MySQL counts the row as
        // affected exactly when we held it.
        // Not retried: a release whose answer was lost may have happened,
        // and a second try would then report the lock as lost.
        let done = sqlx::query(AssertSqlSafe(self.sql.release.as_str()))
            .bind(LOCK_NAME)
            .bind(owner)
            .bind(t)
            .execute(&self.space.pool)
            .await
            .map_err(|e| self.backend("release", e))?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(self.lost(owner, token))
        }
    }

    async fn inspect(&self) -> Result<Option<LockInfo>, LockError> {
        self.holder().await
    }

    async fn force_release(&self) -> Result<Option<LockInfo>, LockError> {
        let row = match idempotent("force release", || async {
            let mut tx = self.space.pool.begin().await?;
            let row = sqlx::query(AssertSqlSafe(self.sql.lock_row.as_str()))
                .bind(LOCK_NAME)
                .fetch_optional(&mut *tx)
                .await?;
            if row.is_some() {
                sqlx::query(AssertSqlSafe(self.sql.free.as_str()))
                    .bind(LOCK_NAME)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(row)
        })
        .await
        {
            Err(e) if self.space.absent(&e) => None,
            r => r.map_err(|e| self.backend("force release", e))?,
        };
        match row {
            Some(r) => {
                let row = self.decode(&r, true)?;
                self.info(row)
            }
            None => Ok(None),
        }
    }
}
