//! The MySQL / MariaDB backend as the conformance suites drive it. Each
//! namespace is a fresh database (`ns`, and `ns_t` for separate targets).
//!
//! Connection budget (MariaDB's default `max_connections` is 151): every
//! handle gets its own small lazy pool: 2 connections for an audit store or
//! a lock, 1 for a separate target; 16 concurrent runners need at most 16 × 4.

use std::sync::Arc;
use std::time::Duration;

use flamingock_core::{AuditStore, BoxError, LockProvider};
use flamingock_mysql::{quote_ident, MysqlAuditStore, MysqlContext, MysqlLock, MysqlTarget};
use flamingock_test_support::audit_suite::AuditStoreUnderTest;
use flamingock_test_support::bad_input_suite::{BadInputUnderTest, Misshapen, Unprepared};
use flamingock_test_support::lock_suite::LockUnderTest;
use flamingock_test_support::pipeline_suite::{
    PipelineCapabilities, PipelineEnv, PipelineUnderTest,
};
use futures::future::BoxFuture;
use sqlx::{AssertSqlSafe, MySqlPool};

/// The MySQL backend under test.
pub struct My {
    /// Where the handles under test connect.
    pub url: String,
    /// The suite's own DDL and cleanup.
    pub admin: MySqlPool,
    /// Repetitions of the concurrency check.
    pub repetitions: usize,
}

impl My {
    /// The backend on the server of `FLAMINGOCK_TEST_MYSQL_URL`.
    pub fn new(url: String) -> My {
        My {
            admin: super::admin(&url),
            url,
            repetitions: 20,
        }
    }

    /// A small lazy pool on database `db` for a handle under test.
    pub fn pool(&self, db: &str, max: u32) -> MySqlPool {
        super::pool(&self.url, db, max)
    }
}

/// A stalled runner's connection is closed this long after it went idle
/// inside its transaction, so the runner that took over its lease is not
/// blocked by its row locks (whole seconds: MySQL's `wait_timeout`).
const IDLE: Duration = Duration::from_secs(2);

/// The database of the separate targets of namespace `ns`.
fn elsewhere(ns: &str) -> String {
    format!("{ns}_t")
}

#[flamingock_core::async_trait]
impl AuditStoreUnderTest for My {
    async fn open(&self, ns: &str) -> Result<Arc<dyn AuditStore>, BoxError> {
        super::create_databases(&self.admin, &[ns]).await?;
        let store = MysqlAuditStore::builder(self.pool(ns, 2)).build().await?;
        Ok(Arc::new(store))
    }
    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        Ok(super::drop_databases(&self.admin, &[ns]).await?)
    }
}

#[flamingock_core::async_trait]
impl LockUnderTest for My {
    async fn open(&self, ns: &str) -> Result<Arc<dyn LockProvider>, BoxError> {
        super::create_databases(&self.admin, &[ns]).await?;
        let lock = MysqlLock::builder(self.pool(ns, 2)).build().await?;
        Ok(Arc::new(lock))
    }
    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        Ok(super::drop_databases(&self.admin, &[ns]).await?)
    }
}

#[flamingock_core::async_trait]
impl PipelineUnderTest for My {
    type Target = MysqlTarget;

    async fn open(&self, ns: &str) -> Result<PipelineEnv<MysqlTarget>, BoxError> {
        let other = elsewhere(ns);
        super::create_databases(&self.admin, &[ns, &other]).await?;
        for d in [ns, other.as_str()] {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "CREATE TABLE IF NOT EXISTS {}.counters (`key` VARCHAR(255) PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB",
                quote_ident(d)
            )))
            .execute(&self.admin)
            .await?;
        }
        let store = MysqlAuditStore::builder(self.pool(ns, 2)).build().await?;
        let elsewhere =
            |id: &str| MysqlTarget::builder(id, self.pool(&other, 1)).idle_timeout(Some(IDLE));
        Ok(PipelineEnv {
            lock: Arc::new(store.lock()),
            shared: Some(
                store
                    .shared_target("shared")
                    .idle_timeout(Some(IDLE))
                    .build()
                    .await?,
            ),
            separate: Some(elsewhere("separate").marker(false).build().await?),
            separate_marker: Some(elsewhere("separate-marker").build().await?),
            store: Arc::new(store),
        })
    }

    fn bump<'a>(ctx: &'a mut MysqlContext, key: &'a str) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            let q = format!(
                "INSERT INTO {}.counters (`key`, n) VALUES (?, 1)
                 ON DUPLICATE KEY UPDATE n = n + 1",
                quote_ident(ctx.database())
            );
            sqlx::query(AssertSqlSafe(q))
                .bind(key)
                .execute(ctx.conn())
                .await?;
            Ok(())
        })
    }

    async fn count(&self, target: &MysqlTarget, key: &str) -> Result<u64, BoxError> {
        let q = format!(
            "SELECT n FROM {}.counters WHERE `key` = ?",
            quote_ident(target.database())
        );
        let n: Option<i64> = sqlx::query_scalar(AssertSqlSafe(q))
            .bind(key)
            .fetch_optional(target.pool())
            .await?;
        Ok(u64::try_from(n.unwrap_or(0))?)
    }

    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        Ok(super::drop_databases(&self.admin, &[ns, &elsewhere(ns)]).await?)
    }

    async fn footprint(&self, ns: &str) -> Result<Vec<String>, BoxError> {
        Ok(super::footprint(&self.admin, &[ns, &elsewhere(ns)]).await?)
    }

    fn capabilities(&self) -> PipelineCapabilities {
        PipelineCapabilities::default()
            .runners(16)
            .repetitions(self.repetitions)
    }
}

async fn exec(admin: &MySqlPool, sql: String) -> Result<(), BoxError> {
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(admin).await?;
    Ok(())
}

#[flamingock_core::async_trait]
impl BadInputUnderTest for My {
    async fn corrupt_state(&self, ns: &str, id: &str, bad: &str) -> Result<String, BoxError> {
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {}.flamingock_audit_current SET state = ? WHERE change_id = ?",
            quote_ident(ns)
        )))
        .bind(bad)
        .bind(id)
        .execute(&self.admin)
        .await?;
        Ok("flamingock_audit_current".into())
    }

    async fn open_without_auto_create(&self, ns: &str) -> Result<Unprepared, BoxError> {
        super::create_databases(&self.admin, &[ns]).await?;
        let store = MysqlAuditStore::builder(self.pool(ns, 2))
            .auto_create(false)
            .build()
            .await?;
        Ok(Unprepared {
            names: vec![format!("{ns}.flamingock_audit_history")],
            ddl: Some(store.ddl()),
            store: Arc::new(store),
        })
    }

    async fn run_ddl(&self, ns: &str, ddl: &str) -> Result<(), BoxError> {
        // The script's statements, one at a time, in the namespace's database.
        let pool = self.pool(ns, 1);
        for stmt in ddl.split(";\n").filter(|s| !s.trim().is_empty()) {
            sqlx::raw_sql(AssertSqlSafe(stmt.to_owned()))
                .execute(&pool)
                .await
                .map_err(|e| format!("{stmt}: {e}"))?;
        }
        Ok(())
    }

    async fn misshape(&self, ns: &str) -> Result<Misshapen, BoxError> {
        super::create_databases(&self.admin, &[ns]).await?;
        exec(
            &self.admin,
            format!(
                "CREATE TABLE {}.flamingock_audit_current (change_id VARCHAR(255) PRIMARY KEY, state TEXT)",
                quote_ident(ns)
            ),
        )
        .await?;
        let store = MysqlAuditStore::builder(self.pool(ns, 2)).build().await?;
        Ok(Misshapen {
            store: Arc::new(store),
            table: "flamingock_audit_current".into(),
            detail: "state_rank".into(),
        })
    }

    async fn kill_connections(&self, ns: &str) -> Result<usize, BoxError> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT ID FROM information_schema.PROCESSLIST
              WHERE DB IN (?, ?) AND ID <> CONNECTION_ID()",
        )
        .bind(ns)
        .bind(elsewhere(ns))
        .fetch_all(&self.admin)
        .await?;
        let mut killed = 0;
        for id in ids {
            // A connection may have ended meanwhile.
            if exec(&self.admin, format!("KILL CONNECTION {id}"))
                .await
                .is_ok()
            {
                killed += 1;
            }
        }
        Ok(killed)
    }

    async fn connect_as(&self, user: &str, secret: &str) -> Result<String, BoxError> {
        let rest = self.url.split_once("://").map_or(&*self.url, |(_, r)| r);
        let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        let host = host.split_once('/').map_or(host, |(h, _)| h);
        let bad = format!("mysql://{user}:{secret}@{host}/test");
        match MysqlAuditStore::connect(&bad).await {
            Ok(_) => Err(format!("connected as {user}").into()),
            Err(e) => Ok(format!("{e} {e:?}")),
        }
    }
}
