//! What the test files share: the server URL, small pools, database cleanup.
#![allow(dead_code, unreachable_pub)]

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{AssertSqlSafe, MySqlPool};

use flamingock_mysql::quote_ident;

pub mod sut;

/// The endpoint (a test without it fails, saying how to provide it).
pub fn url() -> Option<String> {
    Some(flamingock_test_support::require_service(
        &flamingock_test_support::services::MYSQL,
    ))
}

pub fn options(url: &str) -> MySqlConnectOptions {
    MySqlConnectOptions::from_str(url).expect("FLAMINGOCK_TEST_MYSQL_URL is not a valid URL")
}

/// A small lazy pool on database `db`: connections open on first use.
pub fn pool(url: &str, db: &str, max: u32) -> MySqlPool {
    MySqlPoolOptions::new()
        .max_connections(max)
        .min_connections(0)
        .idle_timeout(Some(Duration::from_secs(5)))
        .acquire_timeout(Duration::from_secs(60))
        .connect_lazy_with(options(url).database(db))
}

/// An administrative pool on the URL's own database.
pub fn admin(url: &str) -> MySqlPool {
    MySqlPoolOptions::new()
        .max_connections(2)
        .min_connections(0)
        .idle_timeout(Some(Duration::from_secs(5)))
        .connect_lazy_with(options(url))
}

/// Creates `databases` (empty).
pub async fn create_databases(admin: &MySqlPool, dbs: &[&str]) -> Result<(), sqlx::Error> {
    for d in dbs {
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4",
            quote_ident(d)
        )))
        .execute(admin)
        .await?;
    }
    Ok(())
}

/// Drops `databases` (and everything in them).
pub async fn drop_databases(admin: &MySqlPool, dbs: &[&str]) -> Result<(), sqlx::Error> {
    for d in dbs {
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {}",
            quote_ident(d)
        )))
        .execute(admin)
        .await?;
    }
    Ok(())
}

/// The tables in `dbs` other than the suites' own `counters`, as `db.name`:
/// what the backend created there.
pub async fn footprint(admin: &MySqlPool, dbs: &[&str]) -> Result<Vec<String>, sqlx::Error> {
    let mut out = Vec::new();
    for d in dbs {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(CONCAT(TABLE_SCHEMA, '.', TABLE_NAME) AS CHAR)
               FROM information_schema.TABLES
              WHERE TABLE_SCHEMA = ? AND TABLE_NAME NOT LIKE 'counters%'",
        )
        .bind(d)
        .fetch_all(admin)
        .await?;
        out.extend(names);
    }
    out.sort();
    Ok(out)
}
