//! Sixteen runner processes started together on an empty PostgreSQL
//! database, against one runner alone: wall time until the last exits, and
//! exactly-once checked in every round (DESIGN section 6: waiters back off
//! from 25 ms, re-read the audit while they wait and stop as soon as the
//! work is done).
//!
//! ```sh
//! FLAMINGOCK_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo bench -p flamingock-postgres --bench racing
//! ```
//!
//! Each process is this benchmark binary re-executed as a child: it opens
//! its own pool (2 connections), builds the runner and applies 10
//! shared-transaction changes, each one bumping a counter row. Without
//! `--bench` (as `cargo test --all-targets` runs it) it does one quick round.
#![allow(clippy::print_stdout)]
// a benchmark prints its figures
// The nested futures of the suites' pipelines need more than the default
// depth to lay out (rustc's query depth, not runtime recursion).
#![recursion_limit = "256"]

use std::time::Duration;

use flamingock_core::{AuditStore, BoxError, LockProvider};
use flamingock_postgres::sqlx::postgres::PgPoolOptions;
use flamingock_postgres::sqlx::{self, AssertSqlSafe, PgPool};
use flamingock_postgres::{quote_ident, PgContext, PostgresAuditStore, PostgresTarget};
use flamingock_test_support::pipeline_suite::{Kind, PipelineEnv, PipelineUnderTest};
use flamingock_test_support::process_suite::race_bench;
use futures::future::BoxFuture;
use std::sync::Arc;

struct Pg {
    url: String,
}

fn pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(60))
        .connect_lazy(url)
        .expect("FLAMINGOCK_TEST_POSTGRES_URL is a valid URL")
}

#[flamingock_core::async_trait]
impl PipelineUnderTest for Pg {
    type Target = PostgresTarget;

    async fn open(&self, ns: &str) -> Result<PipelineEnv<PostgresTarget>, BoxError> {
        let store = PostgresAuditStore::builder(pool(&self.url))
            .schema(ns)
            .build()
            .await?;
        let lock: Arc<dyn LockProvider> = Arc::new(store.lock());
        Ok(PipelineEnv {
            lock,
            shared: Some(
                store
                    .shared_target("shared")
                    .build()
                    .await
                    .expect("shared target"),
            ),
            separate: None,
            separate_marker: None,
            store: Arc::new(store) as Arc<dyn AuditStore>,
        })
    }

    fn bump<'a>(ctx: &'a mut PgContext, key: &'a str) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            let schema = quote_ident(ctx.schema());
            sqlx::raw_sql(AssertSqlSafe(format!(
                "CREATE TABLE IF NOT EXISTS {schema}.counters (key text PRIMARY KEY, n bigint NOT NULL)"
            )))
            .execute(ctx.conn())
            .await?;
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {schema}.counters (key, n) VALUES ($1, 1)
                 ON CONFLICT (key) DO UPDATE SET n = counters.n + 1"
            )))
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
        let n: Option<i64> = sqlx::query_scalar(AssertSqlSafe(q))
            .bind(key)
            .fetch_optional(target.pool())
            .await?;
        Ok(u64::try_from(n.unwrap_or(0))?)
    }

    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        let admin = pool(&self.url);
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote_ident(ns)
        )))
        .execute(&admin)
        .await?;
        admin.close().await;
        Ok(())
    }

    async fn footprint(&self, _ns: &str) -> Result<Vec<String>, BoxError> {
        Err("the racing benchmark does not read footprints".into())
    }
}

async fn sut() -> Option<Pg> {
    std::env::var("FLAMINGOCK_TEST_POSTGRES_URL")
        .ok()
        .map(|url| Pg { url })
}

fn main() {
    let figures = race_bench(
        sut,
        Kind::Shared,
        "PostgreSQL, 10 shared-transaction changes per runner",
    );
    println!("{figures}");
}
