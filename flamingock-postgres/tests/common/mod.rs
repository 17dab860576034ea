//! What the test files share: the server URL, small pools, schema cleanup.
#![allow(dead_code, unreachable_pub)]

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool};

use flamingock_postgres::quote_ident;

pub mod sut;

/// The endpoint (a test without it fails, saying how to provide it).
pub fn url() -> Option<String> {
    Some(flamingock_test_support::require_service(
        &flamingock_test_support::services::POSTGRES,
    ))
}

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
