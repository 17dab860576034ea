//! Start-up cost on a SQLite file: a run applying 1,000 trivial changes,
//! and the start-up check (nothing pending: the lock-free fast path) with
//! those 1,000 changes applied, side by side with sqlx's SQLite migrator
//! (`Migrator::run`) on a file with the same 1,000 migrations applied. Both
//! files are in WAL journal mode (Flamingock switches a file to WAL at its
//! first write; sqlx's pool is told to use WAL).
//!
//! ```sh
//! cargo bench -p flamingock-sqlite --bench startup
//! ```
#![allow(clippy::print_stdout)] // a benchmark prints its figures

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use std::time::{Duration, Instant};

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

use flamingock_core::{Change, ChangeMeta, ChangeResult, Flamingock, Stage};
use flamingock_sqlite::{sqlx, SqliteAuditStore, SqliteContext, SqliteTarget};

const CHANGES: usize = 1_000;
const RUNS: usize = 5;

struct Trivial {
    id: String,
    order: String,
}

impl Change for Trivial {
    type Target = SqliteTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new(&self.id).order(&self.order).author("bench")
    }
    async fn apply(&self, db: &mut SqliteContext) -> ChangeResult {
        sqlx::query("INSERT INTO bench (change_id) VALUES (?1)")
            .bind(&self.id)
            .execute(db.conn())
            .await?;
        Ok(())
    }
}

/// The changes, as an application declares them (sqlx's `migrate!` builds
/// its list at compile time: the bench builds both lists outside the clock).
fn stage() -> Stage {
    let mut stage = Stage::new("bench");
    for i in 0..CHANGES {
        stage.add(Trivial {
            id: format!("change-{i:05}"),
            order: format!("{i:05}"),
        });
    }
    stage
}

async fn runner(store: &SqliteAuditStore) -> Flamingock {
    runner_of(store, stage()).await
}

async fn runner_of(store: &SqliteAuditStore, stage: Stage) -> Flamingock {
    Flamingock::builder()
        .audit_store(store.clone())
        .target(
            store
                .shared_target("db")
                .build()
                .await
                .expect("shared target"),
        )
        .stage(stage)
        .build()
        .expect("valid pipeline")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut apply_runs = Vec::new();
    let mut path = dir.path().join("bench-0.db");
    for r in 0..3 {
        path = dir.path().join(format!("bench-{r}.db"));
        let store = SqliteAuditStore::connect(&path).await.expect("open");
        sqlx::query("CREATE TABLE bench (change_id TEXT NOT NULL)")
            .execute(store.pool())
            .await
            .expect("bench table");
        let started = Instant::now();
        let report = runner(&store).await.run().await.expect("run");
        apply_runs.push(started.elapsed());
        assert_eq!(report.totals().applied, CHANGES);
        store.pool().close().await;
    }
    let apply = median(apply_runs);
    println!(
        "apply {CHANGES} trivial changes (shared transaction, one commit each): median {apply:?} \
         of 3 runs ({:?} per change)",
        apply / CHANGES as u32
    );

    // sqlx's migrator on its own file, with the same number of migrations.
    let sqlx_path = dir.path().join("sqlx.db");
    let sqlx_pool = || {
        SqlitePoolOptions::new().connect_with(
            SqliteConnectOptions::new()
                .filename(&sqlx_path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal),
        )
    };
    let migrator = Migrator::with_migrations(
        (0..CHANGES)
            .map(|i| {
                Migration::new(
                    i as i64 + 1,
                    Cow::Owned(format!("change-{i:05}")),
                    MigrationType::Simple,
                    sqlx::AssertSqlSafe(format!(
                        "INSERT INTO bench (change_id) VALUES ('change-{i:05}')"
                    ))
                    .into_sql_str(),
                    false,
                )
            })
            .collect(),
    );
    {
        let pool = sqlx_pool().await.expect("sqlx pool");
        sqlx::query("CREATE TABLE bench (change_id TEXT NOT NULL)")
            .execute(&pool)
            .await
            .expect("bench table");
        migrator.run(&pool).await.expect("sqlx applies");
        pool.close().await;
    }

    // Start-up check as an application does it: open the file, build the
    // runner from its declared changes (or take sqlx's migrator), run;
    // nothing is pending. The two
    // tools take turns in every round.
    let mut checks = Vec::new();
    let mut warm = Vec::new();
    let mut sqlx_checks = Vec::new();
    let mut sqlx_warm = Vec::new();
    for _ in 0..RUNS * 4 {
        let declared = stage();
        let started = Instant::now();
        let store = SqliteAuditStore::connect(&path).await.expect("open");
        let r = runner_of(&store, declared).await;
        let report = r.run().await.expect("check");
        checks.push(started.elapsed());
        assert!(!report.took_lock);
        assert_eq!(report.totals().skipped, CHANGES);
        let started = Instant::now();
        r.run().await.expect("check");
        warm.push(started.elapsed());
        store.pool().close().await;

        let started = Instant::now();
        let pool = sqlx_pool().await.expect("sqlx pool");
        migrator.run(&pool).await.expect("sqlx check");
        sqlx_checks.push(started.elapsed());
        let started = Instant::now();
        migrator.run(&pool).await.expect("sqlx check");
        sqlx_warm.push(started.elapsed());
        pool.close().await;
    }
    let (cold, hot, sqlx_cold, sqlx_hot) = (
        median(checks),
        median(warm),
        median(sqlx_checks),
        median(sqlx_warm),
    );
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "start-up check, {CHANGES} applied, open + check (medians of {}): flamingock {cold:?}   sqlx {sqlx_cold:?}   flamingock/sqlx {:.2}x",
        RUNS * 4,
        ratio(cold, sqlx_cold)
    );
    println!(
        "start-up check, {CHANGES} applied, on an open store/pool: flamingock {hot:?}   sqlx {sqlx_hot:?}   flamingock/sqlx {:.2}x",
        ratio(hot, sqlx_hot)
    );
}
