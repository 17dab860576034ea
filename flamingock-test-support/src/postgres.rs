//! The PostgreSQL backend as every suite drives it (feature `postgres`):
//! the audit store, lock and targets of `flamingock-postgres` on a fresh
//! schema per namespace, with the hooks of the bad-input suite. Used by
//! `flamingock-postgres`'s own tests and by crates that pair another part
//! with PostgreSQL (`flamingock-redis-lock` runs its lock over this audit
//! store), so the setup is written once.
//!
//! Connection budget (the server's default `max_connections` is 100): every
//! handle gets its own small lazy pool: 2 connections for an audit store or a
//! lock (a change's transaction + the lease refresher), 1 for the separate
//! targets; 16 concurrent runners thus need at most 16 × 3 plus the world's
//! own handles, which leaves room for the one other test the harness runs
//! at the same time.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use flamingock_core::{AuditStore, BoxError, LockProvider};
use flamingock_postgres::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use flamingock_postgres::sqlx::{self, AssertSqlSafe, ConnectOptions, PgPool};
use flamingock_postgres::{
    quote_ident, PgContext, PostgresAuditStore, PostgresLock, PostgresTarget,
};
use futures::future::BoxFuture;

use crate::audit_suite::AuditStoreUnderTest;
use crate::bad_input_suite::{BadInputUnderTest, Misshapen, Unprepared};
use crate::lock_suite::LockUnderTest;
use crate::pipeline_suite::{PipelineCapabilities, PipelineEnv, PipelineUnderTest};

/// The endpoint (a test without it fails, saying how to provide it).
pub fn url() -> Option<String> {
    Some(crate::require_service(&crate::services::POSTGRES))
}

/// The connect options of `url`.
///
/// # Panics
/// When `url` is not a PostgreSQL URL.
pub fn options(url: &str) -> PgConnectOptions {
    PgConnectOptions::from_str(url).expect("FLAMINGOCK_TEST_POSTGRES_URL is not a valid URL")
}

/// A small lazy pool: connections open on first use, so many runners fit
/// under the server's `max_connections`.
pub fn pool(url: &str, max: u32) -> PgPool {
    pool_with(options(url), max)
}

/// [`pool`] with given connect options.
pub fn pool_with(options: PgConnectOptions, max: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max)
        .min_connections(0)
        .idle_timeout(Some(Duration::from_secs(5)))
        .acquire_timeout(Duration::from_secs(60))
        .connect_lazy_with(options)
}

/// Drops `schemas` (and everything in them).
pub async fn drop_schemas(admin: &PgPool, schemas: &[&str]) -> Result<(), sqlx::Error> {
    for s in schemas {
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote_ident(s)
        )))
        .execute(admin)
        .await?;
    }
    Ok(())
}

/// The tables (and sequences, views...) in `schemas` other than the suites'
/// own `counters`, as `schema.name`: what the backend created there.
pub async fn footprint(admin: &PgPool, schemas: &[&str]) -> Result<Vec<String>, sqlx::Error> {
    let names: Vec<String> = schemas.iter().map(|s| (*s).to_owned()).collect();
    sqlx::query_scalar(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = ANY($1) AND c.relname NOT LIKE 'counters%'
          ORDER BY 1",
    )
    .bind(&names)
    .fetch_all(admin)
    .await
}

/// The PostgreSQL backend under test.
pub struct Pg {
    /// Where the handles under test connect (the server, or a pooler).
    pub url: String,
    /// Straight to the server: the suite's own DDL and cleanup.
    pub admin: PgPool,
    /// The handles sit behind a pooler in transaction mode.
    pub pooler: bool,
    /// Repetitions of the concurrency check.
    pub repetitions: usize,
    /// The suite's lease (`None`: the suite's default, 1.2 s).
    pub lease: Option<Duration>,
    /// What `url` points at when it is private to the test (a pooler, a TLS
    /// server), stopped when the backend is dropped (at the end of the test,
    /// also when it panics).
    pub keep_alive: Option<Arc<dyn std::any::Any + Send + Sync>>,
    /// The targets' `idle_in_transaction_timeout` (default [`IDLE`]).
    pub idle: Duration,
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pg")
            .field("url", &self.url)
            .field("pooler", &self.pooler)
            .field("repetitions", &self.repetitions)
            .field("lease", &self.lease)
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

impl Pg {
    /// The backend straight on the server of `FLAMINGOCK_TEST_POSTGRES_URL`.
    pub fn direct(url: String) -> Pg {
        Pg {
            admin: pool(&url, 2),
            url,
            pooler: false,
            repetitions: 50,
            lease: None,
            keep_alive: None,
            idle: IDLE,
        }
    }

    /// A small lazy pool for a handle under test; behind a transaction
    /// pooler without a statement cache (sqlx would look a cached statement
    /// up on whatever server connection the next transaction gets).
    ///
    /// `extra_float_digits`, which sqlx sends by default, is left out: a
    /// stock PgBouncer refuses it.
    pub fn pool(&self, max: u32) -> PgPool {
        self.pool_named(max, "flamingock-tests")
    }

    /// [`pool`](Self::pool) whose connections carry `application_name`
    /// `name`, so that a test can find (and terminate) them.
    pub fn pool_named(&self, max: u32, name: &str) -> PgPool {
        let options = options(&self.url)
            .extra_float_digits(None)
            .application_name(name);
        if self.pooler {
            pool_with(options.statement_cache_capacity(0), max)
        } else {
            pool_with(options, max)
        }
    }
}

/// A stalled runner's transaction ends, by default, this long after it went idle, so the
/// runner that took over its lease is not blocked by its row locks (the
/// suite's lease is 1.2 s).
pub const IDLE: Duration = Duration::from_secs(2);

/// The `application_name` of the connections of namespace `ns`.
fn application(ns: &str) -> String {
    format!("fk-{ns}")
}

/// The schema of the separate targets of namespace `ns`.
fn elsewhere(ns: &str) -> String {
    format!("{ns}_t")
}

#[async_trait::async_trait]
impl AuditStoreUnderTest for Pg {
    async fn open(&self, ns: &str) -> Result<Arc<dyn AuditStore>, BoxError> {
        let store = PostgresAuditStore::builder(self.pool(2))
            .schema(ns)
            .transaction_pooler(self.pooler)
            .build()
            .await?;
        Ok(Arc::new(store))
    }
    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        Ok(drop_schemas(&self.admin, &[ns]).await?)
    }
}

#[async_trait::async_trait]
impl LockUnderTest for Pg {
    async fn open(&self, ns: &str) -> Result<Arc<dyn LockProvider>, BoxError> {
        let lock = PostgresLock::builder(self.pool(2))
            .schema(ns)
            .transaction_pooler(self.pooler)
            .build()
            .await?;
        Ok(Arc::new(lock))
    }
    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        Ok(drop_schemas(&self.admin, &[ns]).await?)
    }
}

#[async_trait::async_trait]
impl PipelineUnderTest for Pg {
    type Target = PostgresTarget;

    async fn open(&self, ns: &str) -> Result<PipelineEnv<PostgresTarget>, BoxError> {
        let other = elsewhere(ns);
        // The counters the test changes bump, in both schemas.
        let mut ddl = String::from("SELECT pg_advisory_xact_lock(42);\n");
        for s in [ns, other.as_str()] {
            let s = quote_ident(s);
            ddl.push_str(&format!(
                "CREATE SCHEMA IF NOT EXISTS {s};
                 CREATE TABLE IF NOT EXISTS {s}.counters (key text PRIMARY KEY, n bigint NOT NULL);\n"
            ));
        }
        sqlx::raw_sql(AssertSqlSafe(ddl))
            .execute(&self.admin)
            .await?;
        let app = application(ns);
        let store = PostgresAuditStore::builder(self.pool_named(2, &app))
            .schema(ns)
            .transaction_pooler(self.pooler)
            .build()
            .await?;
        // Another pool to the same database; the marker table lives in the other schema.
        let elsewhere = |id: &str| {
            PostgresTarget::builder(id, self.pool_named(1, &app))
                .schema(other.clone())
                .transaction_pooler(self.pooler)
                .idle_in_transaction_timeout(Some(self.idle))
        };
        Ok(PipelineEnv {
            lock: Arc::new(store.lock()),
            shared: Some(
                store
                    .shared_target("shared")
                    .idle_in_transaction_timeout(Some(self.idle))
                    .build()
                    .await?,
            ),
            separate: Some(elsewhere("separate").marker(false).build().await?),
            separate_marker: Some(elsewhere("separate-marker").build().await?),
            store: Arc::new(store),
        })
    }

    fn bump<'a>(ctx: &'a mut PgContext, key: &'a str) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            let q = format!(
                "INSERT INTO {}.counters (key, n) VALUES ($1, 1)
                 ON CONFLICT (key) DO UPDATE SET n = counters.n + 1",
                quote_ident(ctx.schema())
            );
            sqlx::query(AssertSqlSafe(q))
                .bind(key)
                .execute(ctx.conn())
                .await?;
            Ok(())
        })
    }

    async fn count(&self, target: &PostgresTarget, key: &str) -> Result<u64, BoxError> {
        let q = format!(
            "SELECT n FROM {}.counters WHERE key = $1",
            quote_ident(target.schema().expect("a schema is set"))
        );
        // In a transaction: behind a transaction pooler a statement's parse
        // and execution only reach one server connection inside one.
        let mut tx = target.pool().begin().await?;
        let n: Option<i64> = sqlx::query_scalar(AssertSqlSafe(q))
            .persistent(!self.pooler)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(u64::try_from(n.unwrap_or(0))?)
    }

    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        Ok(drop_schemas(&self.admin, &[ns, &elsewhere(ns)]).await?)
    }

    async fn footprint(&self, ns: &str) -> Result<Vec<String>, BoxError> {
        Ok(footprint(&self.admin, &[ns, &elsewhere(ns)]).await?)
    }

    fn capabilities(&self) -> PipelineCapabilities {
        let caps = PipelineCapabilities::default()
            .runners(16)
            .repetitions(self.repetitions);
        match self.lease {
            Some(l) => caps.lease(l),
            None => caps,
        }
    }
}

async fn exec(admin: &PgPool, sql: String) -> Result<(), BoxError> {
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(admin).await?;
    Ok(())
}

#[async_trait::async_trait]
impl BadInputUnderTest for Pg {
    async fn corrupt_state(&self, ns: &str, id: &str, bad: &str) -> Result<String, BoxError> {
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {}.flamingock_audit_current SET state = $1 WHERE change_id = $2",
            quote_ident(ns)
        )))
        .bind(bad)
        .bind(id)
        .execute(&self.admin)
        .await?;
        Ok("flamingock_audit_current".into())
    }

    async fn open_without_auto_create(&self, ns: &str) -> Result<Unprepared, BoxError> {
        // The operator's schema exists; the store's tables do not.
        exec(&self.admin, format!("CREATE SCHEMA {}", quote_ident(ns))).await?;
        let store = PostgresAuditStore::builder(self.pool(2))
            .schema(ns)
            .auto_create(false)
            .build()
            .await?;
        Ok(Unprepared {
            names: vec![format!("{ns}.flamingock_audit_history")],
            ddl: Some(store.ddl()),
            store: Arc::new(store),
        })
    }

    async fn run_ddl(&self, _ns: &str, ddl: &str) -> Result<(), BoxError> {
        exec(&self.admin, ddl.to_owned()).await
    }

    async fn misshape(&self, ns: &str) -> Result<Misshapen, BoxError> {
        let s = quote_ident(ns);
        exec(
            &self.admin,
            format!(
                "CREATE SCHEMA {s};
                 CREATE TABLE {s}.flamingock_audit_current (change_id text PRIMARY KEY, state text)"
            ),
        )
        .await?;
        let store = PostgresAuditStore::builder(self.pool(2))
            .schema(ns)
            .build()
            .await?;
        Ok(Misshapen {
            store: Arc::new(store),
            table: format!("{ns}.flamingock_audit_current"),
            detail: "state_rank".into(),
        })
    }

    async fn kill_connections(&self, ns: &str) -> Result<usize, BoxError> {
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(application(ns))
        .fetch_all(&self.admin)
        .await?;
        Ok(killed.into_iter().filter(|k| *k).count())
    }

    async fn connect_as(&self, user: &str, secret: &str) -> Result<String, BoxError> {
        let bad = options(&self.url)
            .username(user)
            .password(secret)
            .to_url_lossy()
            .to_string();
        match PostgresAuditStore::connect(&bad).await {
            Ok(_) => Err(format!("connected as {user}").into()),
            Err(e) => Ok(format!("{e} {e:?}")),
        }
    }
}
