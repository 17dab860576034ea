//! The pipeline suite with a Redis lock over a PostgreSQL audit store and
//! PostgreSQL targets (`FLAMINGOCK_TEST_REDIS_URL` and
//! `FLAMINGOCK_TEST_POSTGRES_URL`): the lock and the fence live in two
//! different systems. Each namespace is a fresh schema (dropped by
//! `cleanup`) and a fresh pair of Redis keys (deleted by `cleanup`).

mod common;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use common::Redis;
use flamingock_core::{async_trait, BoxError};
use flamingock_postgres::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use flamingock_postgres::sqlx::{self, AssertSqlSafe, PgPool};
use flamingock_postgres::{quote_ident, PgContext, PostgresAuditStore, PostgresTarget};
use flamingock_test_support::pipeline_suite::{
    PipelineCapabilities, PipelineEnv, PipelineUnderTest,
};
use flamingock_test_support::{require_service, services};
use futures::future::BoxFuture;

/// PostgreSQL audit store and targets, Redis lock.
struct PgRedis {
    redis: Redis,
    /// The targets' `idle_in_transaction_timeout`.
    idle: Duration,
    pg_url: String,
    admin: PgPool,
}

/// A small lazy pool, so 16 concurrent runners fit in the server's
/// default `max_connections`.
fn pool(url: &str, max: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max)
        .min_connections(0)
        .idle_timeout(Some(Duration::from_secs(5)))
        .acquire_timeout(Duration::from_secs(60))
        .connect_lazy_with(
            PgConnectOptions::from_str(url).expect("FLAMINGOCK_TEST_POSTGRES_URL is not a URL"),
        )
}

async fn pg_redis() -> Option<PgRedis> {
    with_idle_timeout(IDLE)
}

fn with_idle_timeout(idle: Duration) -> Option<PgRedis> {
    let redis = common::redis()?;
    let pg_url = require_service(&services::POSTGRES)?;
    Some(PgRedis {
        redis,
        idle,
        admin: pool(&pg_url, 2),
        pg_url,
    })
}

/// A stalled runner's transaction ends this long after it went idle, so the
/// runner that took over its lease is not blocked by its row locks for
/// long (the suite's lease is 1.2 s).
const IDLE: Duration = Duration::from_secs(2);

/// The schema of the separate targets of namespace `ns`.
fn elsewhere(ns: &str) -> String {
    format!("{ns}_t")
}

#[async_trait]
impl PipelineUnderTest for PgRedis {
    type Target = PostgresTarget;

    async fn open(&self, ns: &str) -> Result<PipelineEnv<PostgresTarget>, BoxError> {
        let other = elsewhere(ns);
        // The counters the test changes bump, in both schemas (serialised:
        // concurrent CREATE SCHEMA IF NOT EXISTS can collide).
        let mut ddl = String::from("SELECT pg_advisory_xact_lock(4242);\n");
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
        let store = PostgresAuditStore::builder(pool(&self.pg_url, 2))
            .schema(ns)
            .build()
            .await?;
        let elsewhere = PostgresTarget::new("separate-marker", pool(&self.pg_url, 1)).schema(other);
        Ok(PipelineEnv {
            lock: Arc::new(self.redis.lock(ns).await?),
            shared: Some(
                store
                    .target("shared")
                    .idle_in_transaction_timeout(Some(self.idle)),
            ),
            separate: Some(elsewhere.clone().without_marker().with_id("separate")),
            separate_marker: Some(elsewhere),
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
            quote_ident(target.schema_name())
        );
        let n: Option<i64> = sqlx::query_scalar(AssertSqlSafe(q))
            .bind(key)
            .fetch_optional(target.pool())
            .await?;
        Ok(u64::try_from(n.unwrap_or(0))?)
    }

    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        for s in [ns.to_owned(), elsewhere(ns)] {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                quote_ident(&s)
            )))
            .execute(&self.admin)
            .await?;
        }
        self.redis.delete_keys(ns).await
    }

    fn capabilities(&self) -> PipelineCapabilities {
        PipelineCapabilities::default()
    }
}

mod pipeline {
    use super::pg_redis;
    flamingock_test_support::pipeline_tests!(pg_redis);
}

/// A runner whose Redis lease vanished mid-change cannot commit: the fence
/// check inside its PostgreSQL transaction rejects it; the next runner does
/// the work exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_lease_cannot_commit_past_the_postgres_fence() {
    // The stalled runner's transaction must outlive the check, so that the
    // fence, not the server's idle timeout, is what stops it.
    let Some(sut) = with_idle_timeout(Duration::from_secs(60)) else {
        return;
    };
    common::expired_lease_cannot_commit(&sut, &sut.redis).await;
}
