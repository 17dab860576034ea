//! The fenced lease lock, as one row of a `<prefix>_lock` table.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use flamingock_core::{async_trait, Acquire, Lease, LockError, LockInfo, LockProvider};
use sqlx::{AssertSqlSafe, PgPool, Row, SqlSafeStr, SqlStr};

use crate::names::{Names, Table};
use crate::schema::SchemaError;
use crate::space::{idempotent, Space};
use crate::store::{DEFAULT_PREFIX, DEFAULT_SCHEMA};

/// Name of the lock row (one lock per schema + prefix).
const LOCK_NAME: &str = "flamingock";

#[derive(Debug)]
struct Statements {
    acquire: SqlStr,
    holder: SqlStr,
    extend: SqlStr,
    release: SqlStr,
    force_release: SqlStr,
}

impl Statements {
    fn new(n: &Names) -> Self {
        let t = n.qualified(Table::Lock);
        let s = |s: String| AssertSqlSafe(s).into_sql_str();
        Statements {
            // One atomic conditional write: free (owner NULL), expired by the
            // server's clock, or already ours. The token counter lives in the
            // row and survives releases, so every grant gets a higher token.
            acquire: s(format!(
                "INSERT INTO {t} AS l (name, owner, token, expires_at)
                 VALUES ($1, $2, 1, clock_timestamp() + make_interval(secs => $3))
                 ON CONFLICT (name) DO UPDATE
                    SET owner = EXCLUDED.owner, token = l.token + 1, expires_at = EXCLUDED.expires_at
                  WHERE l.owner IS NULL OR l.expires_at <= clock_timestamp() OR l.owner = EXCLUDED.owner
                 RETURNING token, expires_at"
            )),
            holder: s(format!(
                "SELECT owner, token, expires_at, expires_at <= clock_timestamp()
                   FROM {t} WHERE name = $1 AND owner IS NOT NULL"
            )),
            extend: s(format!(
                "UPDATE {t} SET expires_at = clock_timestamp() + make_interval(secs => $4)
                  WHERE name = $1 AND owner = $2 AND token = $3
                 RETURNING expires_at"
            )),
            // The row stays (with its token): only the owner goes.
            release: s(format!(
                "UPDATE {t} SET owner = NULL WHERE name = $1 AND owner = $2 AND token = $3"
            )),
            force_release: s(format!(
                "WITH old AS (SELECT name, owner, token, expires_at FROM {t}
                               WHERE name = $1 AND owner IS NOT NULL FOR UPDATE)
                 UPDATE {t} l SET owner = NULL FROM old WHERE l.name = old.name
                 RETURNING old.owner, old.token, old.expires_at, old.expires_at <= clock_timestamp()"
            )),
        }
    }
}

/// The PostgreSQL [`LockProvider`]: one row of `<schema>.<prefix>_lock`.
///
/// Every operation is one statement in autocommit mode, with expiry judged
/// by the server's clock: no session state (no session advisory locks, no
/// `SET`), so it works behind PgBouncer in transaction pooling mode.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use flamingock_postgres::PostgresLock;
/// let pool = sqlx::PgPool::connect_lazy("postgres://app@db/app")?;
/// let lock = PostgresLock::builder(pool).schema("ops").build().await?;
/// # let _ = lock; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresLock {
    space: Arc<Space>,
    sql: Arc<Statements>,
    describe: String,
}

/// Configures a standalone [`PostgresLock`] (the audit store's own comes from
/// [`PostgresAuditStore::lock`](crate::PostgresAuditStore::lock)).
#[derive(Debug, Clone)]
#[must_use]
pub struct PostgresLockBuilder {
    pool: PgPool,
    schema: String,
    prefix: String,
    auto_create: bool,
    pooler: bool,
}

impl PostgresLockBuilder {
    /// The pool reaches PostgreSQL through a pooler in transaction mode
    /// (see [`PostgresAuditStoreBuilder::transaction_pooler`](crate::PostgresAuditStoreBuilder::transaction_pooler)).
    pub fn transaction_pooler(mut self, yes: bool) -> Self {
        self.pooler = yes;
        self
    }
    /// Schema of the lock table (default `public`).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
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
    pub async fn build(self) -> Result<PostgresLock, LockError> {
        let names =
            Names::new(&self.schema, &self.prefix).map_err(|detail| LockError::InvalidConfig {
                lock: format!("postgres({}.{}_lock)", self.schema, self.prefix),
                detail,
            })?;
        Ok(PostgresLock::from_space(Arc::new(Space::new(
            self.pool,
            names,
            self.auto_create,
            self.pooler,
            vec![Table::Lock],
        ))))
    }
}

fn secs(lease: Duration) -> f64 {
    lease.as_secs_f64()
}

impl PostgresLock {
    /// A builder for a lock on `pool`.
    pub fn builder(pool: PgPool) -> PostgresLockBuilder {
        crate::install_tls_provider();
        PostgresLockBuilder {
            pool,
            schema: DEFAULT_SCHEMA.to_owned(),
            prefix: DEFAULT_PREFIX.to_owned(),
            auto_create: true,
            pooler: false,
        }
    }

    pub(crate) fn from_space(space: Arc<Space>) -> Self {
        PostgresLock {
            sql: Arc::new(Statements::new(&space.names)),
            describe: format!("postgres({})", space.names.display(Table::Lock)),
            space,
        }
    }

    fn backend(&self, operation: &'static str, source: sqlx::Error) -> LockError {
        LockError::Backend {
            lock: self.describe.clone(),
            operation,
            source: crate::db_error::with_hint(source),
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
        u64::try_from(t).map_err(|_| LockError::Malformed {
            lock: self.describe.clone(),
            detail: format!("negative token {t}"),
        })
    }

    async fn ready(&self) -> Result<(), LockError> {
        self.space.ready().await.map_err(|e| match e {
            SchemaError::Db { operation, source } => LockError::Backend {
                lock: self.describe.clone(),
                operation,
                source: crate::db_error::with_hint(source),
            },
            SchemaError::Missing { detail, .. } => LockError::Malformed {
                lock: self.describe.clone(),
                detail,
            },
            SchemaError::WrongShape { table, detail } => LockError::Malformed {
                lock: self.describe.clone(),
                detail: format!("table {table}: {detail}"),
            },
        })
    }

    fn info(&self, r: &sqlx::postgres::PgRow) -> Result<LockInfo, LockError> {
        let bad = |e: sqlx::Error| LockError::Malformed {
            lock: self.describe.clone(),
            detail: e.to_string(),
        };
        let owner: String = r.try_get(0).map_err(bad)?;
        let token: i64 = r.try_get(1).map_err(bad)?;
        let expires_at: DateTime<Utc> = r.try_get(2).map_err(bad)?;
        let expired: bool = r.try_get(3).map_err(bad)?;
        Ok(LockInfo::new(
            owner,
            self.token(token)?,
            expires_at,
            expired,
        ))
    }

    async fn holder(&self) -> Result<Option<LockInfo>, LockError> {
        let row = match idempotent("inspect lock", || async {
            let mut c = self.space.conn().await?;
            let row = sqlx::query(self.sql.holder.clone())
                .persistent(self.space.persistent())
                .bind(LOCK_NAME)
                .fetch_optional(&mut *c)
                .await?;
            c.finish().await?;
            Ok(row)
        })
        .await
        {
            // No lock table yet: nobody ever held the lock here.
            Err(e) if self.space.absent(&e) => None,
            r => r.map_err(|e| self.backend("inspect", e))?,
        };
        row.map(|r| self.info(&r)).transpose()
    }
}

#[async_trait]
impl LockProvider for PostgresLock {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn try_acquire(&self, owner: &str, lease: Duration) -> Result<Acquire, LockError> {
        self.ready().await?;
        // The holder can change between a refused write and the read that
        // names it; a few attempts settle it.
        for _ in 0..5 {
            // Retrying after a lost connection is safe: a grant that did
            // happen is ours, and acquiring our own lock again just bumps the token.
            let row = idempotent("acquire lock", || async {
                let mut c = self.space.conn().await?;
                let row = sqlx::query(self.sql.acquire.clone())
                    .persistent(self.space.persistent())
                    .bind(LOCK_NAME)
                    .bind(owner)
                    .bind(secs(lease))
                    .fetch_optional(&mut *c)
                    .await?;
                c.finish().await?;
                Ok(row)
            })
            .await
            .map_err(|e| self.backend("acquire", e))?;
            if let Some(r) = row {
                let bad = |e: sqlx::Error| LockError::Malformed {
                    lock: self.describe.clone(),
                    detail: e.to_string(),
                };
                let token: i64 = r.try_get(0).map_err(bad)?;
                let expires_at: DateTime<Utc> = r.try_get(1).map_err(bad)?;
                return Ok(Acquire::Acquired(Lease::new(
                    self.token(token)?,
                    expires_at,
                )));
            }
            match self.holder().await? {
                Some(h) if !h.expired && h.owner != owner => return Ok(Acquire::Held(h)),
                _ => continue,
            }
        }
        Err(LockError::Malformed {
            lock: self.describe.clone(),
            detail: "the lock row keeps changing between acquisition attempts".into(),
        })
    }

    async fn extend(&self, owner: &str, token: u64, lease: Duration) -> Result<Lease, LockError> {
        self.ready().await?;
        let Ok(t) = i64::try_from(token) else {
            return Err(self.lost(owner, token));
        };
        let row: Option<DateTime<Utc>> = idempotent("extend lock", || async {
            let mut c = self.space.conn().await?;
            let row = sqlx::query_scalar(self.sql.extend.clone())
                .persistent(self.space.persistent())
                .bind(LOCK_NAME)
                .bind(owner)
                .bind(t)
                .bind(secs(lease))
                .fetch_optional(&mut *c)
                .await?;
            c.finish().await?;
            Ok(row)
        })
        .await
        .map_err(|e| self.backend("extend", e))?;
        match row {
            Some(expires_at) => Ok(Lease::new(token, expires_at)),
            None => Err(self.lost(owner, token)),
        }
    }

    async fn release(&self, owner: &str, token: u64) -> Result<(), LockError> {
        self.ready().await?;
        let Ok(t) = i64::try_from(token) else {
            return Err(self.lost(owner, token));
        };
        let done = async {
            let mut c = self.space.conn().await?;
            let done = sqlx::query(self.sql.release.clone())
                .persistent(self.space.persistent())
                .bind(LOCK_NAME)
                .bind(owner)
                .bind(t)
                .execute(&mut *c)
                .await?;
            c.finish().await?;
            Ok::<_, sqlx::Error>(done)
        }
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
        let row = match async {
            let mut c = self.space.conn().await?;
            let row = sqlx::query(self.sql.force_release.clone())
                .persistent(self.space.persistent())
                .bind(LOCK_NAME)
                .fetch_optional(&mut *c)
                .await?;
            c.finish().await?;
            Ok::<_, sqlx::Error>(row)
        }
        .await
        {
            Err(e) if self.space.absent(&e) => None,
            r => r.map_err(|e| self.backend("force release", e))?,
        };
        row.map(|r| self.info(&r)).transpose()
    }
}
