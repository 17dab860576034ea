//! Sixteen runner processes started together on one new SQLite file,
//! against one runner alone: wall time until the last exits, and
//! exactly-once checked in every round.
//!
//! ```sh
//! cargo bench -p flamingock-sqlite --bench racing
//! ```
//!
//! Each process is this benchmark binary re-executed as a child: it opens
//! the file (WAL), builds the runner and applies 10 shared-transaction
//! changes, each one bumping a counter row. Without `--bench` (as
//! `cargo test --all-targets` runs it) it does one quick round.
#![allow(clippy::print_stdout)]
// a benchmark prints its figures
// The nested futures of the suites' pipelines need more than the default
// depth to lay out (rustc's query depth, not runtime recursion).
#![recursion_limit = "256"]

use std::path::PathBuf;
use std::sync::Arc;

use flamingock_core::{AuditStore, BoxError, LockProvider};
use flamingock_sqlite::{sqlx, SqliteAuditStore, SqliteContext, SqliteTarget};
use flamingock_test_support::pipeline_suite::{Kind, PipelineEnv, PipelineUnderTest};
use flamingock_test_support::process_suite::{family_id, race_bench};
use futures::future::BoxFuture;

const COUNTERS: &str =
    "CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY NOT NULL, n INTEGER NOT NULL)";

/// Files in a directory named after the parent process, found by its children.
struct Sqlite {
    dir: PathBuf,
}

impl Sqlite {
    fn file(&self, ns: &str) -> PathBuf {
        self.dir.join(format!("{ns}.db"))
    }
}

#[flamingock_core::async_trait]
impl PipelineUnderTest for Sqlite {
    type Target = SqliteTarget;

    async fn open(&self, ns: &str) -> Result<PipelineEnv<SqliteTarget>, BoxError> {
        let store = SqliteAuditStore::connect(self.file(ns)).await?;
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

    fn bump<'a>(ctx: &'a mut SqliteContext, key: &'a str) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            sqlx::query(COUNTERS).execute(ctx.conn()).await?;
            sqlx::query(
                "INSERT INTO counters (key, n) VALUES (?1, 1) \
                 ON CONFLICT (key) DO UPDATE SET n = n + 1",
            )
            .bind(key)
            .execute(ctx.conn())
            .await?;
            Ok(())
        })
    }

    async fn count(&self, target: &SqliteTarget, key: &str) -> Result<u64, BoxError> {
        sqlx::query(COUNTERS).execute(target.pool()).await?;
        let n: Option<i64> = sqlx::query_scalar("SELECT n FROM counters WHERE key = ?1")
            .bind(key)
            .fetch_optional(target.pool())
            .await?;
        Ok(u64::try_from(n.unwrap_or(0))?)
    }

    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.file(ns).into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    }

    async fn footprint(&self, _ns: &str) -> Result<Vec<String>, BoxError> {
        Err("the racing benchmark does not read footprints".into())
    }
}

fn dir() -> PathBuf {
    std::env::temp_dir().join(format!("flamingock-sqlite-race-{}", family_id()))
}

async fn sut() -> Option<Sqlite> {
    let dir = dir();
    std::fs::create_dir_all(&dir).ok()?;
    Some(Sqlite { dir })
}

fn main() {
    let figures = race_bench(
        sut,
        Kind::Shared,
        "SQLite (WAL), 10 shared-transaction changes per runner",
    );
    println!("{figures}");
    // Each round removed its files; the directory goes too.
    let _ = std::fs::remove_dir(dir());
}
